"""The keys ``add_segalias_config`` adds, node by node, with their defaults and what each means (see
:mod:`.config` for the rules: idempotent, every key under a ``SEGALIAS`` node)."""

from detectron2.config import CfgNode as CN


def _default(node, key, value):
    """``node[key]``, set to ``value`` first if missing (a ``CN()`` value makes a sub-node)."""
    if key not in node:
        node[key] = value
    return node[key]


def _add_backbone_config(cfg):
    """Anti-aliased ResNet / ResNet-FPN keys (DAF, FreqMix, BlurPool, stem).

    Used by ``build_segalias_resnet_backbone`` / ``build_segalias_resnet_fpn_backbone``. Stock keys
    (MODEL.RESNETS.DEPTH/NORM/STRIDE_IN_1X1/..., MODEL.BACKBONE.FREEZE_AT, MODEL.FPN.*) are reused.
    """
    sa = _default(cfg.MODEL, "SEGALIAS", CN())
    # ResNet stem: "basic" = Detectron2's 7x7 stem (MSRA / torchvision weights); "deep" = ResNet-V1c
    # stem (3x3 convs 32/32/64 + max-pool) used by the paper's ResNet-50-V1c backbone.
    _default(sa, "STEM_TYPE", "basic")
    # MODEL.WEIGHTS that fill less than half of the backbone (training) or 90% of the model
    # (--eval-only, --resume) are refused; True (tools/train_net.py --allow-partial-weights) loads
    # them with a warning
    _default(sa, "ALLOW_PARTIAL_WEIGHTS", False)

    # Training: recompute each stage filter's output (DAF / BlurPool) in backward instead of
    # keeping it for the next stage's first convs: the same gradients, less memory (BENCHMARKS.md:
    # the step's peak without it is ~10 points higher), one more filter pass per stage.
    _default(sa, "RECOMPUTE_FILTER_OUTPUTS", True)

    daf = _default(sa, "DAF", CN())
    # De-aliasing filter (paper: DAF, `blur_type='flc'`) on the inputs of the listed stages.
    _default(daf, "ENABLED", True)
    # DAF box cut-off in cycles/px (paper: `freq_thres` = 0.25 * 1.4 = 0.35), in (0, 0.5].
    _default(daf, "CUTOFF", 0.35)
    # Stages whose input is filtered (paper: stages 2-4 = res3, res4, res5); returned features stay
    # unfiltered.
    _default(daf, "STAGES", ["res3", "res4", "res5"])

    fm = _default(sa, "FREQMIX", CN())
    # FreqMix after conv2 of every bottleneck of the listed stages (paper: `_FrequencyMix`,
    # `att_pos='after_conv2'`).
    _default(fm, "ENABLED", True)
    # FreqMix band split in cycles/px (paper: hard-coded 0.25 * 1.4 = 0.35), in (0, 0.5].
    _default(fm, "CUTOFF", 0.35)
    # Stages with FreqMix (paper: stages 2-4 = res3, res4, res5; `train_first_stage=False`).
    _default(fm, "STAGES", ["res3", "res4", "res5"])
    # SE compression ratio of the two channel gates (paper: `compress_ratio` = 16).
    _default(fm, "REDUCTION", 16)
    # "released" = the shipped code (SE fed by spectrum means = top-left-pixel values, read from the
    # spectrum shifted over all dims, i.e. rolled over batch and channel); variants, which do not
    # reproduce the paper: "per_image" = the same descriptor from each image's own spectrum
    # (formerly "faithful", now an error), "band_energy" = SE fed by per-band RMS.
    _default(fm, "GATE", "released")

    bp = _default(sa, "BLURPOOL", CN())
    # Binomial BlurPool baseline in the DAF slot (paper baseline: `blur_type='blur'`); exclusive
    # with DAF per stage.
    _default(bp, "ENABLED", False)
    # Binomial kernel size (paper: `blur_k`, 3/5/7; 1 = identity "blur1" baseline).
    _default(bp, "KERNEL_SIZE", 3)
    # Stages whose input is blurred (same slots as the DAF).
    _default(bp, "STAGES", ["res3", "res4", "res5"])

    # LIS ("Instance Segmentation in the Dark") modules; docs/lis_modules.md.
    awd = _default(sa, "AWD", CN())
    # Adaptive weighted downsampling (released `AdaDConv`) on the inputs of the listed stages, after
    # DAF/BlurPool.
    _default(awd, "ENABLED", False)
    # Stages it precedes (released caffe R50: res3, res4, res5; res2 keeps the stem's max-pool).
    _default(awd, "STAGES", ["res3", "res4", "res5"])
    # 2 = AWD takes over the stage's stride, the stage runs at stride 1 (released caffe-style R50,
    # the LIS recipes); 1 = a stride-1 pre-filter in front of a stage that keeps its stride
    # (released pytorch style).
    _default(awd, "STRIDE", 2)

    scb = _default(sa, "SCB", CN())
    # Smooth-oriented conv block (released `SmoothPriorBottleneck`): a softmax low-pass + 1x1 branch
    # beside conv2 of every bottleneck of the listed stages, added before FreqMix and conv2's norm.
    # Training form; `tools/fold_scb.py` folds a trained checkpoint into plain conv2 weights (then
    # run with ENABLED False).
    _default(scb, "ENABLED", False)
    # Stages with SCB (released: every stage from `frozen_stages` on, i.e. res3-res5 with FREEZE_AT
    # 2).
    _default(scb, "STAGES", ["res3", "res4", "res5"])
    # Low-pass logits at init: "released" = the binomial values (softmax makes the kernel near-box)
    # | "gaussian" (variant) = log(binomial), effective kernel = the binomial.
    _default(scb, "INIT", "released")

    dsl = _default(sa, "DSL", CN())
    # Disturbance suppression learning, used by MODEL.META_ARCHITECTURE "DSLGeneralizedRCNN" (the
    # switch): clean + noisy pass, loss = both detection losses + sum over IN_FEATURES of
    # LOSS_WEIGHT * mean(min((F_noisy - F_clean)^2, CLAMP)), no stop-gradient (released
    # MaskRCNNNoiseInv).
    _default(
        dsl, "IN_FEATURES", ["res2", "res3", "res4", "res5"]
    )  # backbone stage outputs C2-C5 (not FPN)
    _default(dsl, "LOSS_WEIGHT", 0.01)  # released: 0.01 per level, hard-coded
    _default(dsl, "CLAMP", 0.1)  # released: squared difference clamped at 0.1


def _add_data_config(cfg):
    """Low-light data keys (RAW reading, synthesis, mapper, semantic augmentation)."""
    inp = _default(cfg.INPUT, "SEGALIAS", CN())
    # image_format of records that carry none: "srgb" | "raw" | "raw_rgb" | "raw_packed"
    _default(inp, "DEFAULT_IMAGE_FORMAT", "srgb")
    # camera RAW records ("raw"): "raw_rgb" = 3-ch [R, meanG, B] or "packed" = 4-ch [R, G1, B, G2],
    # half res
    _default(inp, "RAW_OUTPUT", "raw_rgb")
    # exposure-ratio amplification for records without one; 0 = none
    _default(inp, "EXPOSURE_RATIO", 0.0)
    # [0, 1] images are multiplied by this before normalisation (255 = Detectron2's uint8 range)
    _default(inp, "PIXEL_SCALE", 255.0)
    # resize interpolation of TRAINING images: "nearest" | "bilinear" | "bicubic". Released LIS
    # recipes train with "nearest" (mmcv/OpenCV INTER_NEAREST on the uint8 image, so noise is not
    # smoothed).
    _default(inp, "RESIZE_INTERP", "bilinear")
    # resize interpolation at TEST time, same choices. Released LIS: LIS2LIS tests "bilinear" (its
    # nearest line is commented out); SynCOCO2LIS and COCO2LIS test "nearest".
    _default(inp, "RESIZE_INTERP_TEST", "bilinear")
    syn = _default(inp, "SYNTHESIS", CN())
    # synthesise low-light raw from sRGB training records (unprocess + PGRU noise). Defaults below =
    # the released LIS SynCOCO pipeline (AddNoisyImg + process.py); other values are labelled
    # variants.
    _default(syn, "ENABLED", False)
    # exposure ratio r ~ U(low, high) (released SynCOCO2LIS: (10, 100))
    _default(syn, "RATIO_RANGE", (10.0, 100.0))
    # RNG seed; < 0 = fresh entropy per image
    _default(syn, "SEED", -1)
    # also return the clean counterpart (same unprocess draw) as "clean_image" (paired / DSL
    # training)
    _default(syn, "RETURN_CLEAN", False)
    # clean twin of every TRAINING image as "clean_image" (DSL): "none" | "synthetic" (the
    # synthesis's clean raw-RGB, released SynCOCO; needs SYNTHESIS.ENABLED) | "pair" (real pairs:
    # the record's "clean_file_name", or for a LIS-layout dark image n the normal-exposure image n -
    # 1). Same transforms as the image.
    _default(inp, "CLEAN_TWIN", "none")
    # "after_augment" (released: after Resize + Flip, on the resized image) |
    # "before_augment" (variant: synthesise at full resolution, then resize/flip noisy and clean)
    _default(syn, "ORDER", "after_augment")
    # 8 (released process.py: uint8 sRGB in, mosaic rounded to uint8, OpenCV demosaic on uint8,
    # output on multiples of 1/255) | 16 (variant: 16-bit demosaic, float output)
    _default(syn, "BIT_DEPTH", 8)
    # odd H or W: "resize" (released: bilinear resize to even size before unprocess, back after
    # demosaic) | "pad" (variant: edge-pad by one pixel, crop back)
    _default(syn, "ODD_SIZE", "resize")
    # "raw_rgb" (3-ch, full res; released) | "packed" (4-ch, half res; variant, no released
    # counterpart)
    _default(syn, "OUTPUT", "raw_rgb")
    # raw_rgb rendering: "bilinear" demosaic (released) | "pack" ([R, meanG, B] at half res, resized
    # back; variant, needs BIT_DEPTH 16)
    _default(syn, "METHOD", "bilinear")
    # quantisation noise: "scalar" (released LIS/ELD: one U(-0.5, 0.5) DN offset per image) |
    # "per_pixel" (variant: one draw per pixel) | "round" (variant) | "none"
    _default(syn, "QUANTIZATION", "scalar")
    cache = _default(_default(cfg.DATALOADER, "SEGALIAS", CN()), "DECODE_CACHE", CN())
    # decode each image once (in-memory LRU per worker, optional .npy disk cache)
    _default(cache, "ENABLED", False)
    # in-memory LRU size (images) per DataLoader worker; 0 = disk cache only
    _default(cache, "MAX_ITEMS", 32)
    # on-disk .npy cache folder; "" = no disk cache
    _default(cache, "DIR", "")
    # Semantic training augmentation (paper/mmseg): scale jitter of a target box, crop with a
    # single-category area limit, flip. Used when the training datasets have evaluator_type
    # "sem_seg". Limit on the share of the crop one category may cover (Detectron2's
    # RandomCrop_CategoryAreaConstraint, with INPUT.CROP.*; paper: cat_max_ratio 0.75); 1.0 = no
    # limit.
    _default(inp, "CROP_SINGLE_CATEGORY_MAX_AREA", 1.0)
    rs = _default(inp, "RESIZE_SCALE", CN())
    _default(rs, "ENABLED", False)  # True: ResizeScale instead of ResizeShortestEdge
    _default(rs, "MIN_SCALE", 0.5)  # paper: ratio_range (0.5, 2.0)
    _default(rs, "MAX_SCALE", 2.0)
    _default(rs, "TARGET_HEIGHT", 1025)  # paper, Cityscapes: img_scale (2049, 1025)
    _default(rs, "TARGET_WIDTH", 2049)


def _add_evaluation_config(cfg):
    """Boundary-error evaluator keys (``cfg.TEST.SEGALIAS``); only missing keys are added."""
    ev = _default(cfg.TEST, "SEGALIAS", CN())
    # Side (px) of the square dilation kernel that turns 1-px Laplacian edges into the
    # BIoU/FErr/MErr/DErr band (odd; 15 = +-7 px, paper).
    _default(ev, "BOUNDARY_BAND_WIDTH", 15)
    # Cheng et al. Boundary IoU / Boundary AP band width as a fraction of the image diagonal (COCO
    # 0.02, Cityscapes 0.005).
    _default(ev, "BOUNDARY_IOU_DILATION_RATIO", 0.02)
    # Also run the semantic Boundary IoU evaluator (task "boundary_iou") next to the boundary-error
    # evaluator.
    _default(ev, "SEM_SEG_BOUNDARY_IOU", False)
    # Instances with score >= this are pasted into the semantic projection used for instance
    # boundary errors.
    _default(ev, "INSTANCE_SCORE_THRESH", 0.5)
    # Options used only by a tool are flags of that tool: an old config that sets one fails with
    # yacs' "Key TEST.SEGALIAS.<KEY> was renamed to <the flag>".
    moved_to_tool_flags = {
        "TEST.SEGALIAS.ERROR_MAP_DIR": "the --output flag of tools/visualize_errors.py (default "
        "OUTPUT_DIR/error_maps)",
        "TEST.SEGALIAS.VIS_ALPHA": "the --alpha flag of tools/visualize_errors.py",
        "TEST.SEGALIAS.ALIASING_NYQUIST": "the --nyquist flag of tools/analyze_aliasing.py",
    }
    for old_key, flag in moved_to_tool_flags.items():
        if not cfg.key_is_renamed(old_key):
            cfg.register_renamed_key(
                old_key, flag, "options used only by a tool are flags of that tool, not config keys"
            )


def _add_solver_config(cfg):
    """Optimizer / schedule / training-recipe keys (``SOLVER.SEGALIAS``) and sliding-window
    inference."""
    s = _default(cfg.SOLVER, "SEGALIAS", CN())
    # LR multiplier for parameters whose name contains ".freqmix." (paper: paramwise `custom_keys`
    # 'att': lr x2).
    _default(s, "FREQMIX_LR_MULTIPLIER", 2.0)
    # LR multiplier for AWD and SCB parameters (names containing ".awd." / ".scb."; released
    # SynCOCO2LIS: lr_mult 2 for 'AdaD', 'llpf', 'learnable_conv1', AWD's BN affine included).
    _default(s, "AWD_SCB_LR_MULTIPLIER", 2.0)
    # LR multiplier for `sem_seg_head.` parameters (paper semantic recipe: 'head': lr x2); 1.0 =
    # off.
    _default(s, "HEAD_LR_MULTIPLIER", 1.0)
    # SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR" selects mmcv's poly schedule with a floor:
    # lr = ((BASE_LR - POLY_LR_MIN_LR) * (1 - it / MAX_ITER) ** POLY_LR_POWER + POLY_LR_MIN_LR) *
    # warm-up
    _default(s, "POLY_LR_POWER", 0.9)  # paper (mmseg): power 0.9
    _default(s, "POLY_LR_MIN_LR", 1e-4)  # paper (mmseg): min_lr 1e-4 (absolute)
    # Epoch-based schedule (released LIS recipes, mmdet EpochBasedRunner). When ENABLED the trainer
    # sets MAX_ITER = MAX_EPOCHS * E and STEPS = STEP_EPOCHS * E, E = ceil(NUM_IMAGES /
    # IMS_PER_BATCH), overriding the MAX_ITER/STEPS of the file, and writes the values used into
    # OUTPUT_DIR/config.yaml.
    es = _default(s, "EPOCH_SCHEDULE", CN())
    _default(es, "ENABLED", False)
    _default(es, "MAX_EPOCHS", 12)  # released LIS: total_epochs 12 ("1x")
    _default(
        es, "STEP_EPOCHS", (9, 11)
    )  # released LIS: lr_config step=[9, 11] (x GAMMA after epochs 9 and 11)
    _default(
        es, "NUM_IMAGES", 0
    )  # training images per epoch; 0 = count DATASETS.TRAIN at setup (after filtering)
    _default(
        es, "CHECKPOINT_EPOCHS", 0
    )  # > 0: CHECKPOINT_PERIOD = this many epochs; 0 = keep CHECKPOINT_PERIOD
    # Sliding-window inference for semantic segmentation (paper, Cityscapes: 768 window, 512 stride)
    sw = _default(_default(cfg.TEST, "SEGALIAS", CN()), "SLIDING_WINDOW", CN())
    _default(sw, "ENABLED", False)
    _default(sw, "SIZE", [768, 768])  # (height, width) of a window
    _default(sw, "STRIDE", [512, 512])  # (y, x) step between windows; logits averaged on overlaps


def _add_semantic_config(cfg):
    """UPerNet head keys (``MODEL.SEGALIAS.UPERNET``) and the semantic recipe's input keys
    (photometric distortion, test-time resize to a multiple). The head also reads Detectron2's
    MODEL.SEM_SEG_HEAD.{IN_FEATURES, NUM_CLASSES, CONVS_DIM (paper: 128 channels), NORM,
    IGNORE_VALUE, LOSS_WEIGHT, COMMON_STRIDE}."""
    up = _default(_default(cfg.MODEL, "SEGALIAS", CN()), "UPERNET", CN())
    # PPM pool scales on res5 (paper / MMSeg UPerHead: (1, 2, 3, 6))
    _default(up, "POOL_SCALES", [1, 2, 3, 6])
    # Dropout2d probability before the predictors of the decoder and the auxiliary head (paper: 0.1)
    _default(up, "DROPOUT", 0.1)
    # align_corners of every bilinear resize in the head and of the logits -> label resize (paper:
    # False)
    _default(up, "ALIGN_CORNERS", False)
    # cross-entropy normalisation: "all_pixels" (released, MMSeg 0.25 avg_non_ignore=False: sum /
    # all pixels, ignored and padded ones included) | "valid_pixels" (variant: Detectron2's mean
    # over non-ignored pixels)
    _default(up, "LOSS_NORMALIZATION", "all_pixels")
    aux = _default(up, "AUX", CN())
    # auxiliary FCN head (MMSeg FCNHead, concat_input=False), training only (paper: on, res4, 256
    # ch, 1 conv, 0.4)
    _default(aux, "ENABLED", True)
    _default(aux, "IN_FEATURE", "res4")
    _default(aux, "CHANNELS", 256)
    _default(aux, "NUM_CONVS", 1)
    _default(aux, "LOSS_WEIGHT", 0.4)
    inp = _default(cfg.INPUT, "SEGALIAS", CN())
    pmd = _default(inp, "PHOTOMETRIC_DISTORTION", CN())
    # MMSeg PhotoMetricDistortion after the flip (semantic training recipe; paper: on, MMSeg
    # defaults below)
    _default(pmd, "ENABLED", False)
    _default(pmd, "BRIGHTNESS_DELTA", 32)  # brightness + U(-32, 32)
    _default(pmd, "CONTRAST_RANGE", (0.5, 1.5))  # contrast x U(0.5, 1.5)
    _default(pmd, "SATURATION_RANGE", (0.5, 1.5))  # HSV saturation x U(0.5, 1.5)
    _default(pmd, "HUE_DELTA", 18)  # OpenCV hue (0..179) + randint(-18, 18), upper bound excluded
    # test time: stretch the resized image up to the next multiple of this (paper, ADE20K:
    # ResizeToMultiple(32)); 0 = off
    _default(inp, "RESIZE_TO_MULTIPLE_TEST", 0)

"""The calibrated PGRU noise model of LIS / ELD (Canon EOS 5D Mark IV): Poisson shot noise with
system gain K, Tukey-lambda read noise, row banding and quantisation, in the dark digital-number
domain; used by :func:`.synthesis.synthesize_lowlight` (its docstring has the whole pipeline)."""

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "SATURATION",
    "K_MIN",
    "K_MAX",
    "TUKEY_LAMBDAS",
    "TL_SCALE_FIT",
    "ROW_SCALE_FIT",
    "QUANTIZATION_MODES",
    "NoiseParams",
    "sample_noise_params",
    "add_pgru_noise",
    "predicted_variance",
]

#: white - black of the 14-bit Canon sensor, in DN (released ``saturation_level = 16383 - 512``).
SATURATION = 16383 - 512
#: range of the system gain K (DN per electron), ``Kmin`` / ``Kmax`` of the camera-parameter file.
K_MIN, K_MAX = 0.2182, 13.964
#: Tukey-lambda shapes of the calibrated read noise: the ``G_shape`` array of the ELD/LIS camera
#: parameter file ``CanonEOS5D4_params.npy`` (18 entries in file order, exactly k/70). The released
#: sampler draws one ENTRY uniformly (``np.random.choice``), so repeated values are proportionally
#: more likely: 6/70 has probability 4/18, 2/70 3/18. The 10 distinct values are the set quoted in
#: the LIS report, {0.014, 0.029, 0.057, 0.071, 0.086, 0.100, 0.114, 0.143, 0.157, 0.200}.
TUKEY_LAMBDAS = tuple(k / 70.0 for k in (11, 10, 6, 6, 14, 14, 7, 6, 4, 5, 2, 2, 1, 2, 6, 5, 8, 8))
#: log-linear regressions of the noise scales on log K: (slope, bias, sigma of the residual).
TL_SCALE_FIT = (0.6559, 1.0927, 0.2860)  # Tukey-lambda read-noise scale sigma_TL
ROW_SCALE_FIT = (0.4713, -0.8079, 0.2436)  # row (banding) noise sigma_r
QUANTIZATION_MODES = ("per_pixel", "scalar", "round", "none")


@dataclass
class NoiseParams:
    """One draw of the PGRU noise model (DN values refer to the dark, un-amplified exposure)."""

    ratio: float  # exposure ratio r (amplification)
    K: float  # system gain, DN per electron
    tukey_lambda: float  # shape of the read-noise distribution
    sigma_tl: float  # read-noise scale (DN)
    sigma_r: float  # row-noise standard deviation (DN)

    def as_dict(self):
        return asdict(self)


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_noise_params(rng=None, ratio_range=(10.0, 100.0), ratio=None):
    """Draw (r, K, lambda, sigma_TL, sigma_r) as in LIS dark_noising.py (Canon EOS 5D Mark IV)."""
    rng = _rng(rng)
    log_k = rng.uniform(math.log(K_MIN), math.log(K_MAX))
    lam = TUKEY_LAMBDAS[int(rng.integers(len(TUKEY_LAMBDAS)))]  # one entry, repeats included
    sigma_tl = math.exp(
        TL_SCALE_FIT[0] * log_k + TL_SCALE_FIT[1] + TL_SCALE_FIT[2] * rng.standard_normal()
    )
    sigma_r = math.exp(
        ROW_SCALE_FIT[0] * log_k + ROW_SCALE_FIT[1] + ROW_SCALE_FIT[2] * rng.standard_normal()
    )
    r = float(ratio) if ratio is not None else float(rng.uniform(*ratio_range))
    return NoiseParams(
        ratio=r, K=math.exp(log_k), tukey_lambda=lam, sigma_tl=sigma_tl, sigma_r=sigma_r
    )


def add_pgru_noise(
    packed, params, rng=None, components="PGRU", quantization="per_pixel", amplify=True
):
    """Add PGRU noise to a clean packed raw (h, w, C) in [0, 1] (normal-exposure brightness).

    ``components`` is any subset of "P" (Poisson shot), "G" (Tukey-lambda read), "R" (row),
    "U" (quantisation). Returns the noisy image amplified by ``params.ratio`` (clipped to [0, 1]),
    or the un-amplified dark capture (``amplify=False``, in [0, 1/r]).
    """
    from scipy import stats  # noqa: PLC0415  (optional dependency)

    if quantization not in QUANTIZATION_MODES:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got '{quantization}'")
    rng = _rng(rng)
    y = np.asarray(packed, dtype=np.float64) * SATURATION / params.ratio
    if "P" in components:
        z = params.K * rng.poisson(y / params.K).astype(np.float64)
    else:
        z = y.copy()
    if "G" in components:
        z += stats.tukeylambda.rvs(
            params.tukey_lambda, scale=params.sigma_tl, size=z.shape, random_state=rng
        )
    if "R" in components:
        z += rng.normal(0.0, params.sigma_r, size=(z.shape[0], 1) + z.shape[2:])
    if "U" in components:
        if quantization == "per_pixel":
            z += rng.uniform(-0.5, 0.5, size=z.shape)
        elif quantization == "scalar":  # faithful LIS/ELD quirk: one draw for the whole image
            z += rng.uniform(-0.5, 0.5)
        elif quantization == "round":
            z = np.round(z)
    scale = params.ratio / SATURATION if amplify else 1.0 / SATURATION
    return np.clip(z * scale, 0.0, 1.0).astype(np.float32)


def predicted_variance(y, params, components="PGRU", quantization="per_pixel"):
    """Model variance of :func:`add_pgru_noise`'s amplified output for a flat clean value ``y``."""
    from scipy import stats  # noqa: PLC0415  (optional dependency)

    y_dn = y * SATURATION / params.ratio
    var_dn = 0.0
    if "P" in components:
        var_dn += params.K * y_dn
    if "G" in components:
        var_dn += float(stats.tukeylambda.var(params.tukey_lambda)) * params.sigma_tl**2
    if "R" in components:
        var_dn += params.sigma_r**2
    if "U" in components and quantization in ("per_pixel", "round"):
        var_dn += 1.0 / 12.0
    return var_dn * (params.ratio / SATURATION) ** 2

# Sourced by dev/*.sh: the interpreter set up by dev/setup_env.sh.
if [[ -n "${SEGALIAS_PYTHON:-}" ]]; then PY="$SEGALIAS_PYTHON"; else PY="${SEGALIAS_VENV:-$(pwd)/.venv}/bin/python"; fi

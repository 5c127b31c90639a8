# Sovereign's product image (the one the Umbrel and Start9 packages run).
#
#   docker build -t sovereign .
#   scripts/release VERSION     (linux/amd64 + linux/arm64, pushed, pinned in both packages)
#   docker run -p 8000:8000 -v sovereign-data:/data sovereign
#
# The default command runs web, worker and engine together; the Umbrel and StartOS packages
# run them as separate containers from this same image (`manage.py run web|worker|engine`).

# --- builder: compilers for packages with native code (llama-cpp-python) ---------------
# Debian 13 (trixie) in both stages: its GCC 14 is the first to know the Armv9.2 SME variants
# of llama.cpp's arm64 build (GCC 12 refuses `-march=armv9.2-a+…+sme`), and the final stage
# must have the same libstdc++ as the one the libraries were linked with.
FROM python:3.11-slim-trixie AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

# Everything installed goes into one venv that the final stage copies whole.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml ./
COPY sovereign/ sovereign/
COPY apps/ apps/
# llama-cpp-python compiled portable: nothing from the build machine's processor, one CPU
# library per processor generation, the best one chosen at run time (an old Celeron, an Intel
# N100, a Raspberry Pi 5), none with Intel AMX code (the README's "Processors" says why). For
# the architecture being built (BuildKit's TARGETARCH: amd64 or arm64, each built natively or
# emulated, never cross-compiled); then the rest, which finds it already installed.
ARG TARGETARCH
RUN python sovereign/llama_build.py --venv /opt/venv --cache /tmp/wheels \
        --mode portable --arch "${TARGETARCH:-$(uname -m)}" \
    && rm -rf /tmp/wheels
RUN pip install .

# --- final: no compilers, runs as uid/gid 1000 ------------------------------------------
FROM python:3.11-slim-trixie

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOVEREIGN_DATA_DIR=/data \
    SOVEREIGN_HOST=0.0.0.0 \
    SOVEREIGN_PORT=8000

# uid/gid 1000 owns the app's data directories on Umbrel, so the image uses the same ids.
# The web process runs collectstatic at each start, so staticfiles/ is writable by it.
RUN groupadd --gid 1000 sovereign \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin sovereign \
    && mkdir -p /data /app/staticfiles \
    && chown 1000:1000 /data /app/staticfiles

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY manage.py ./
COPY sovereign/ sovereign/
COPY apps/ apps/
COPY templates/ templates/
COPY static/ static/

USER 1000:1000

# Importing the settings creates a data directory and a secret key file: give them a
# throwaway directory so no key is baked into the image.
RUN SOVEREIGN_DATA_DIR=/tmp/build-data python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-data

EXPOSE 8000

# No curl in the slim image; Python's urllib does the job.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SOVEREIGN_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["python", "manage.py", "run"]

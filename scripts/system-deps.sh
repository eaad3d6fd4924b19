#!/usr/bin/env bash
# System libraries for headless rendering (`reppo video`, `reppo train --video`): Mesa's EGL and its software
# rasteriser. Installs them with apt-get only when they are missing, so it is a no-op (and needs no network) on
# a machine that has them. Everything else reppo needs comes from pip.
set -euo pipefail
have() { ldconfig -p | grep -q "$1"; }
if have "libEGL.so.1" && have "libOpenGL.so.0" && have "libEGL_mesa.so.0"; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri

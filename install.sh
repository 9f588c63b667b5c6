#!/usr/bin/env bash
# fallwatch installer for NVIDIA Jetson (JetPack 5.1 / 6).
# Not available in this version: it says so and changes nothing.
set -euo pipefail
echo "install.sh: the Jetson installer is not part of this version of fallwatch yet;" \
     "see README.md for what runs today" >&2
exit 2

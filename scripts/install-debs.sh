#!/usr/bin/env bash
# Installs the Debian packages spectgan needs (PACS server, DICOM tools and validator, openssl for the TLS test,
# headless Chromium and its driver for the page tests); skips what is present.
set -euo pipefail
packages=(orthanc orthanc-dicomweb dcmtk dicom3tools openssl chromium chromium-driver)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's package starts an Orthanc service where an init system runs; spectgan starts its own in the foreground.
$SUDO service orthanc stop >/dev/null 2>&1 || true

#!/usr/bin/env bash
# Turns the packages in target/debian/ into a signed apt repository that any web server
# can serve: pool/, dists/stable/ (Packages, Release, InRelease, Release.gpg) and the
# public key for `Signed-By`. The signing key is IT's, in their GnuPG home:
#   WARDLOCK_APT_KEY=FINGERPRINT [GNUPGHOME=DIR] scripts/apt-repo.sh [OUT]   (default target/apt-repo)
# WARDLOCK_DEBS=DIR takes the packages from DIR instead of target/debian/.
# See docs/deploying.md.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-target/apt-repo}"
key="${WARDLOCK_APT_KEY:-}"
if [[ -z "$key" ]]; then
    echo "apt-repo: set WARDLOCK_APT_KEY to the fingerprint of the key that signs the repository" \
        "(gpg --list-secret-keys; GNUPGHOME for another key ring)" >&2
    exit 2
fi
if ! gpg --batch --list-secret-keys "$key" >/dev/null 2>&1; then
    echo "apt-repo: no secret key $key in ${GNUPGHOME:-~/.gnupg}" >&2
    exit 2
fi
shopt -s nullglob
debs_dir="${WARDLOCK_DEBS:-target/debian}"
debs=("$debs_dir"/*.deb)
if [[ ${#debs[@]} -eq 0 ]]; then
    echo "apt-repo: no packages in $debs_dir/; run make packages first" >&2
    exit 2
fi

rm -rf "$out"
mkdir -p "$out/pool/main" "$out/dists/stable/main/binary-amd64"
cp "${debs[@]}" "$out/pool/main/"
(
    cd "$out"
    apt-ftparchive packages pool/main >dists/stable/main/binary-amd64/Packages
    gzip -9n -k dists/stable/main/binary-amd64/Packages
    apt-ftparchive \
        -o APT::FTPArchive::Release::Origin=Wardlock \
        -o APT::FTPArchive::Release::Label=Wardlock \
        -o APT::FTPArchive::Release::Suite=stable \
        -o APT::FTPArchive::Release::Codename=stable \
        -o APT::FTPArchive::Release::Architectures=amd64 \
        -o APT::FTPArchive::Release::Components=main \
        -o APT::FTPArchive::Release::Description="Wardlock session guard" \
        release dists/stable >dists/stable/Release
)
gpg --batch --yes --local-user "$key" --clearsign --output "$out/dists/stable/InRelease" "$out/dists/stable/Release"
gpg --batch --yes --local-user "$key" --armor --detach-sign --output "$out/dists/stable/Release.gpg" "$out/dists/stable/Release"
gpg --batch --yes --export "$key" >"$out/wardlock-archive-keyring.gpg"
echo "apt-repo: $out signed by $key; on a workstation:"
echo "  /usr/share/keyrings/wardlock-archive-keyring.gpg  <- $out/wardlock-archive-keyring.gpg"
echo "  deb [signed-by=/usr/share/keyrings/wardlock-archive-keyring.gpg] https://REPO-HOST/wardlock stable main"

#!/usr/bin/env bash
# Builds the Debian packages `wardlock` (a workstation) and `wardlock-collector` into
# target/debian/, from release binaries, with man pages and completions from the
# programs' own clap definitions, and checks them with lintian. See docs/deploying.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --workspace --bins

# A development build's version: the workspace's, then how many commits and which one,
# so that a later build sorts after an earlier one.
version="$(cargo metadata --no-deps --format-version 1 --locked \
    | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="wardlock-agent"))')"
deb_version="${version}+git$(git rev-list --count HEAD).$(git rev-parse --short=10 HEAD)-1"

stage=target/release/package
rm -rf "$stage" && mkdir -p "$stage/man1" "$stage/units"
for program in wardlockd wardlockctl wardlock wardlock-collector; do
    "target/release/$program" generate-docs "$stage/docs"
done
for page in "$stage"/docs/man1/*.1; do
    gzip -9n -c "$page" >"$stage/man1/$(basename "$page").gz"
done
# The units as installers/linux has them, with the programs where the packages put them.
for unit in wardlockd.service wardlock-identity.service wardlock-guard.service wardlock-guard.desktop \
    wardlock-collector.service; do
    sed -e 's|/usr/local/bin/|/usr/bin/|g' -e 's|/usr/local/libexec/|/usr/libexec/|g' \
        -e 's|file:/usr/local/share/doc/|file:/usr/share/doc/|g' \
        "installers/linux/$unit" >"$stage/units/$unit"
done

# The crates linked into each package's programs, with their licences, for
# /usr/share/doc/PACKAGE/ beside the copyright file (Rust links them statically).
licences() {
    local package="$1" front="$2" args=()
    shift 2
    for crate in "$@"; do args+=(--package "$crate"); done
    {
        echo "Rust crates linked into the programs of the $package package, with their licences"
        echo "(from cargo tree). The licence texts: https://spdx.org/licenses/ and each crate's source."
        echo
        cargo tree --locked -e normal "${args[@]}" --prefix none --format '{p} {l}' \
            | sed -e 's/ (\*)//' -e 's/ (proc-macro)//' -e 's| (/[^)]*)||' | grep -v '^$' | sort -u
        echo
        echo "npm packages its web pages ($front/) are built from, with their licences (npm ls --omit=dev):"
        echo
        (cd "$front" && npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | while read -r dir; do
            node -p "const p = require('$dir/package.json'); p.name + ' v' + p.version + ' ' + (p.license || 'UNKNOWN')"
        done | sort -u)
    } >"$stage/$package-third-party-licences.txt"
}
licences wardlock ui wardlock-agent wardlockctl wardlock
licences wardlock-collector console wardlock-collector

mkdir -p target/debian
rm -f target/debian/*.deb
for package in wardlock-agent wardlock-collector; do
    cargo deb --no-build --locked -p "$package" --deb-version "$deb_version" --output target/debian/
done

# lintian: no error; the warnings left are explained in docs/deploying.md.
if command -v lintian >/dev/null; then
    lintian --fail-on error --suppress-tags-from-file installers/debian/lintian-expected target/debian/*.deb
fi
ls -l target/debian/*.deb

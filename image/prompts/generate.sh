#!/usr/bin/env bash
# Regenerates the box's built-in voice prompts
# (image/rootfs/usr/share/branchline/prompts/*.wav, the rootfs overlay's) from
# prompts.txt with espeak-ng (text to speech) and sox (to the prompts' format: PCM,
# mono, 8000 Hz, 16-bit, see firmware/src/prompts). The WAV files are committed, so
# neither tool is needed to build or test; run this after editing prompts.txt.
#   apt-get install espeak-ng sox && image/prompts/generate.sh
set -euo pipefail
cd "$(dirname "$0")"
out=../rootfs/usr/share/branchline/prompts
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
grep -v '^#' prompts.txt | grep -v '^$' | while IFS='|' read -r name text; do
    espeak-ng -v en-us -s 150 -a 120 -w "$tmp/$name.wav" "$text"
    # 8 kHz with sox's default (high-quality) low-pass; leading and trailing silence
    # trimmed; a 50 ms fade at both ends so a prompt never starts or stops with a
    # click; normalised to -3 dBFS.
    sox -R -D "$tmp/$name.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$name.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% fade t 0.05 reverse fade t 0.05 norm -3
done
ls "$out" | wc -l

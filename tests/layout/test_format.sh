#!/bin/bash
# test_format.sh: every C source and header of the project is formatted by
# the repository's .clang-format (clang-format 14, Debian package
# clang-format): `clang-format --dry-run --Werror` reports nothing.
set -u
. "$(dirname "$0")/../lib.sh"
command -v clang-format >/dev/null || fail "clang-format missing (Debian package clang-format)"
cd "$MPQ_SOURCE_DIR" || fail "no source directory $MPQ_SOURCE_DIR"
mapfile -t files < <(find include pipeline stages tests -name '*.[ch]' | sort)
[[ ${#files[@]} -gt 50 ]] || fail "found only ${#files[@]} sources"
run clang-format --dry-run --Werror "${files[@]}"
[[ $RC == 0 ]] || fail "not formatted (run clang-format -i on them): $(grep -o '^[^:]*\.[ch]' "$ERR" | sort -u | head -10 | tr '\n' ' ')"
finish

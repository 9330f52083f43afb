#!/bin/sh
# Checks that every C source and header the repository tracks under
# worker/, bench/, fuzz/, tests/unit/, tests/db/ and tests/tools/ is
# formatted as .clang-format says (clang-format --dry-run --Werror).
# Prints the files that differ and the one command that formats them.
#
# Usage: scripts/check-format.sh [--fix]
#   --fix  format those files in place instead (clang-format -i)
# Exit status: 0 formatted, 1 some file differs, 2 bad usage or no
# clang-format.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

DIRS="worker bench fuzz tests/unit tests/db tests/tools"

fix=false
case "${1:-}" in
    --fix) fix=true ;;
    -h|--help)
        sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    "") ;;
    *)
        echo "check-format.sh: unknown argument: $1" >&2
        exit 2
        ;;
esac

if ! command -v clang-format >/dev/null 2>&1; then
    echo "check-format.sh: clang-format not found" >&2
    echo "hint: Run scripts/install-deps.sh." >&2
    exit 2
fi

files=""
for dir in $DIRS; do
    files="$files $(git ls-files -- "$dir/*.c" "$dir/*.h")"
done

if $fix; then
    # shellcheck disable=SC2086
    clang-format -i $files
    exit 0
fi

differ=""
for f in $files; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
        differ="$differ $f"
    fi
done

if [ -z "$differ" ]; then
    echo "check-format.sh: $(echo $files | wc -w) files formatted"
    exit 0
fi
echo "check-format.sh: not formatted as .clang-format says:" >&2
for f in $differ; do
    echo "  $f" >&2
done
echo "hint: Run scripts/check-format.sh --fix to format them." >&2
exit 1

#!/usr/bin/env bash
# Fails on shell pipelines that race under `set -o pipefail`: a reader that
# exits before its writer is done (grep -q, grep -m, head) makes the writer
# die of SIGPIPE, and the pipeline fails with 141 now and then. Read the
# output whole first (out=$(cmd); grep -q ... <<<"$out").
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
while IFS= read -r f; do
	grep -q 'pipefail' "$f" || continue
	# A pipe into an early-exiting reader, outside comments.
	if hits=$(grep -nE '^[^#]*\|[[:space:]]*(grep[[:space:]]+(-[a-zA-Z]*[qm]|--quiet|--max-count)|head([[:space:]]|$))' "$f"); then
		echo "$f: a pipe into a reader that may exit early (SIGPIPE under pipefail):"
		echo "$hits"
		status=1
	fi
done < <(git ls-files '*.sh' '.ci/*'; git ls-files -o --exclude-standard '*.sh')
exit $status

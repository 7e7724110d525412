#!/usr/bin/env bash
# Instructions per deduction of the engine on the in-memory store, counted by callgrind.
#
# Times on a shared 2-core VM wander by tens of percent; an instruction count repeats to a
# fraction of a percent, so it is the figure to compare across commits. Each case runs the
# example twice, with SMALL and LARGE counted deductions after the same warm-up, and reports
# (Ir(LARGE) - Ir(SMALL)) / (LARGE - SMALL): start-up, warm-up and exit cancel out.
#
# Usage: benches/engine-instructions.sh   (SMALL=2000 LARGE=12000 by default, from the env)
# Writes target/engine-memory/instructions.json and prints a markdown table.
set -euo pipefail

cd "$(dirname "$0")/.."

small_deductions=${SMALL:-2000}
large_deductions=${LARGE:-12000}
out_dir=target/engine-memory
# Every strategy the memory store offers (all but sharded), keyed; and unkeyed the two the
# keyed-vs-unkeyed comparison of the database runs looks at.
cases=(
    "pessimistic keyed"
    "no_wait keyed"
    "optimistic keyed"
    "guarded keyed"
    "coalesced keyed"
    "guarded unkeyed"
    "coalesced unkeyed"
)

command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
(( large_deductions > small_deductions )) || { echo "LARGE must exceed SMALL" >&2; exit 2; }

cargo build --release -p stockguard-core --features test-utils --example engine_instructions
example="${CARGO_TARGET_DIR:-target}/release/examples/engine_instructions"
mkdir -p "$out_dir"

# Total instructions (Ir) of one run: the "summary:" line callgrind writes at the end of its file.
instructions_of_run() {
    local strategy=$1 keying=$2 deductions=$3
    local callgrind_out="$out_dir/callgrind.$strategy.$keying.$deductions.out"
    local flags=()
    [[ $keying == unkeyed ]] && flags+=(--unkeyed)
    valgrind --tool=callgrind --callgrind-out-file="$callgrind_out" \
        "$example" "$strategy" "$deductions" "${flags[@]}" 2>"$callgrind_out.log" \
        || { cat "$callgrind_out.log" >&2; echo "$strategy $keying: the run failed" >&2; exit 1; }
    local total
    total=$(awk '/^summary:/ { print $2 }' "$callgrind_out")
    [[ $total =~ ^[0-9]+$ ]] || { echo "no summary line in $callgrind_out" >&2; exit 1; }
    echo "$total"
}

measured_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
rows=()
json_cases=()
for case in "${cases[@]}"; do
    read -r strategy keying <<<"$case"
    small_total=$(instructions_of_run "$strategy" "$keying" "$small_deductions")
    large_total=$(instructions_of_run "$strategy" "$keying" "$large_deductions")
    instructions_per_deduction=$(( (large_total - small_total) / (large_deductions - small_deductions) ))
    rows+=("| $strategy | $keying | $instructions_per_deduction | $small_total | $large_total |")
    json_cases+=("{\"strategy\": \"$strategy\", \"keying\": \"$keying\", \"instructions_per_deduction\": $instructions_per_deduction, \"instructions_small_run\": $small_total, \"instructions_large_run\": $large_total}")
done

echo
echo "Instructions per deduction (callgrind Ir, in-memory store, $measured_at):"
echo
echo "| strategy | keying | instructions per deduction | Ir at $small_deductions | Ir at $large_deductions |"
echo "|---|---|---:|---:|---:|"
printf '%s\n' "${rows[@]}"

{
    echo "{"
    echo "  \"measured_at\": \"$measured_at\","
    echo "  \"small_deductions\": $small_deductions,"
    echo "  \"large_deductions\": $large_deductions,"
    echo "  \"cases\": ["
    for i in "${!json_cases[@]}"; do
        separator=","
        (( i == ${#json_cases[@]} - 1 )) && separator=""
        echo "    ${json_cases[$i]}$separator"
    done
    echo "  ]"
    echo "}"
} >"$out_dir/instructions.json"
echo
echo "wrote $out_dir/instructions.json"

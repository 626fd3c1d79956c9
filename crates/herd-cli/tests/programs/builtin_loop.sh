# A loop of bash builtins only: no command substitution, no external commands,
# so bash never forks (herd refuses processes with children). Exits with 5.
#
# usage: bash builtin_loop.sh [iterations=600000]
n=${1:-600000}
s=7
for ((i = 0; i < n; i++)); do
    s=$(( (s * 31 + i) % 1000003 ))
    if (( i % 30000 == 0 )); then
        echo "$i $s"
    fi
done
echo "done $s"
exit 5

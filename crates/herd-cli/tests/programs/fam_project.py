"""A C project for `make -j` (families.rs): N translation units that take about four
seconds each to compile with -O2 (long straight-line functions), a main that calls
them, and a Makefile. Usage: python3 fam_project.py DIR N"""
import os
import sys

out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
FUNCS, STEPS = 90, 60
for t in range(n):
    with open(os.path.join(out, f"tu{t}.c"), "w") as f:
        f.write("#include <stdint.h>\n")
        for k in range(FUNCS):
            f.write(f"static uint64_t f{k}(uint64_t x) {{\n    uint64_t s = x;\n")
            for i in range(STEPS):
                a, b, c = (k * 131 + i * 7 + t) % 997 + 3, (i % 29) + 1, (k * 7919 + i * 104729) % 1000003
                f.write(f"    s = (s * {a}u) ^ (s >> {b}) ^ {c}u;\n    if (s & {1 << (i % 31)}u) s += {c % 97}u;\n")
            f.write("    return s;\n}\n")
        calls = " ^ ".join(f"f{k}(x + {k})" for k in range(FUNCS))
        f.write(f"uint64_t tu{t}(uint64_t x) {{ return {calls}; }}\n")
with open(os.path.join(out, "main.c"), "w") as f:
    f.write("#include <stdio.h>\n#include <stdint.h>\n")
    for t in range(n):
        f.write(f"uint64_t tu{t}(uint64_t);\n")
    f.write("int main(void) {\n    uint64_t s = 0;\n")
    for t in range(n):
        f.write(f"    s ^= tu{t}({t});\n")
    f.write('    printf("%llu\\n", (unsigned long long)s);\n    return 0;\n}\n')
objs = " ".join(f"tu{t}.o" for t in range(n))
with open(os.path.join(out, "Makefile"), "w") as f:
    f.write(f"prog: main.o {objs}\n\t$(CC) -o $@ $^\n%.o: %.c\n\t$(CC) -O2 -c -o $@ $<\n")

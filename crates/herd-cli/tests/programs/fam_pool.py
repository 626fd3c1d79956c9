# python3 multiprocessing.Pool(4) of N CPU-bound tasks (families.rs): its workers share
# the pool's semaphores (deleted /dev/shm files) with the parent, which herd keeps at
# home; each worker computes away and comes home to take or hand in a task.
# Prints each task's result in order, then "pool: done". Usage: fam_pool.py N ROUNDS
import multiprocessing
import sys


def work(k, rounds):
    s = 0
    for i in range(rounds):
        s = (s + i * i * k) % 1000003
    return k, s


if __name__ == "__main__":
    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    with multiprocessing.Pool(4) as pool:
        for k, s in pool.starmap(work, [(k, rounds) for k in range(1, n + 1)], chunksize=1):
            print(f"task {k}: {s}", flush=True)
    print("pool: done", flush=True)

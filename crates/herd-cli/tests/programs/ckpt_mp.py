# Python's multiprocessing (fork): three workers add to a shared Value and Array
# under a shared Lock (memory of deleted files in /dev/shm, mapped by all four
# processes: the Value's arena, the Lock's semaphore), the parent ticks.
# Usage: ckpt_mp.py ROUNDS. Prints "tick I" per round, then the totals.
import multiprocessing as mp
import sys
import time


def work(total, counts, lock, rounds, k):
    for i in range(rounds):
        with lock:
            total.value += i * (k + 1)
            counts[k] += 1
        time.sleep(0.05)


if __name__ == "__main__":
    mp.set_start_method("fork")
    rounds = int(sys.argv[1])
    total = mp.Value("q", 0)
    counts = mp.Array("i", 3)
    lock = mp.Lock()
    workers = [mp.Process(target=work, args=(total, counts, lock, rounds, k)) for k in range(3)]
    for w in workers:
        w.start()
    for i in range(rounds):
        time.sleep(0.05)
        print(f"tick {i}", flush=True)
    for w in workers:
        w.join()
    print("total", total.value, "counts", list(counts), "exits", [w.exitcode for w in workers])

// Three Java worker threads and the main thread meet at a CyclicBarrier each
// round; each worker folds the round into its own state (a long hash chain),
// and the main thread prints one line per round with all three values. The
// JVM adds its own threads (JIT compilers, GC, signal dispatcher, ...): about
// fifteen in all. Exits with status 6.
//
// Run with -XX:-UsePerfData: otherwise the JVM maps /tmp/hsperfdata_USER/PID
// shared and writable, which herd refuses to checkpoint (and says so).
//
// usage: javac -d DIR ThrJava.java; java -XX:-UsePerfData -cp DIR ThrJava ROUNDS
import java.util.concurrent.CyclicBarrier;

public class ThrJava {
    static long mix(long x) {
        x ^= x >>> 33;
        x *= 0xff51afd7ed558ccdL;
        x ^= x >>> 33;
        return x;
    }

    public static void main(String[] args) throws Exception {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 40;
        System.err.println("mig-pid: " + ProcessHandle.current().pid()); // for the migration tests
        long[] state = new long[3];
        CyclicBarrier start = new CyclicBarrier(4), end = new CyclicBarrier(4);
        Thread[] workers = new Thread[3];
        for (int w = 0; w < 3; w++) {
            final int id = w;
            workers[w] = new Thread(() -> {
                long s = mix(id + 1);
                try {
                    for (int r = 0; r < rounds; r++) {
                        start.await();
                        for (int i = 0; i < 300000; i++) s = mix(s + i + r);
                        state[id] = s;
                        Thread.sleep(25);
                        end.await();
                    }
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            }, "worker-" + id);
            workers[w].start();
        }
        for (int r = 0; r < rounds; r++) {
            start.await();
            end.await();
            System.out.printf("round %d: %016x %016x %016x%n", r, state[0], state[1], state[2]);
            System.out.flush();
        }
        for (Thread t : workers) t.join();
        System.out.println("done");
        System.exit(6);
    }
}

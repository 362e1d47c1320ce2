// Loaded with `--import` into a platform process by bench/lib.ts (BENCH_CPU_PROF): profiles the whole process and
// writes a .cpuprofile into that folder when it exits (node 20 refuses --cpu-prof in NODE_OPTIONS).
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const folder = process.env.BENCH_CPU_PROF_DIR;
if (folder) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 200 });
  session.post("Profiler.start");
  process.once("exit", () => {
    // An in-process session answers synchronously, so the profile is written before the process ends.
    session.post("Profiler.stop", (error, result) => {
      if (!error)
        writeFileSync(join(folder, `platform-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}

"""What the Trainer's process holds before it trains: resident memory after each import,
each in a fresh process.

    python -m benchmarks.import_memory

Writes `benchmarks/import_memory.md` and `.json`. The libraries `import tensorflow` brings
with it here (it imports Keras 3; matplotlib, scikit-learn, SciPy, Pillow, h5py) are measured
by blocking them (`sys.modules[name] = None`) before `import tensorflow`: an experiment,
not a setting; training never blocks them.
"""

import json
import subprocess
import sys

from benchmarks.record import ROOT, machine, write_result

EXTRAS = ("matplotlib", "sklearn", "scipy", "PIL", "h5py")
PROBE = """
import json, sys
for name in {blocked!r}:
    sys.modules[name] = None
rss = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
{imports}
print(json.dumps({{"rss_mb": rss(), "loaded": sorted(p for p in {extras!r} if sys.modules.get(p) is not None)}}))
"""
CASES = {
    "python": ("pass", ()),
    "import tensorflow": ("import tensorflow", ()),
    "import tensorflow, its extras blocked": ("import tensorflow", EXTRAS),
    "from training import Trainer; import zoo": ("from training import Trainer\nimport zoo", ()),
}


def measure():
    rows = {}
    for name, (imports, blocked) in CASES.items():
        code = PROBE.format(blocked=blocked, imports=imports, extras=EXTRAS)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                             env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"machine": machine(), "cases": rows}


def render(result):
    m = result["machine"]
    lines = ["# What the process holds before it trains", "",
             f"{m['date']}, {m['device']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
             "| imports | resident MB | of matplotlib, sklearn, scipy, PIL, h5py loaded |", "|---|---|---|"]
    for name, row in result["cases"].items():
        lines.append(f"| `{name}` | {row['rss_mb']:.0f} | {', '.join(row['loaded']) or '-'} |")
    cases = result["cases"]
    extras = cases["import tensorflow"]["rss_mb"] - cases["import tensorflow, its extras blocked"]["rss_mb"]
    ours = cases["from training import Trainer; import zoo"]["rss_mb"] - cases["import tensorflow"]["rss_mb"]
    lines += ["", f"The libraries TensorFlow's import brings with it hold {extras:.0f} MB; this project's packages "
              f"add {ours:.0f} MB to `import tensorflow`.", ""]
    return "\n".join(lines)


def main():
    write_result("import_memory", measure(), render)


if __name__ == "__main__":
    main()

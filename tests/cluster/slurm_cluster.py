"""A throw-away single-node Slurm cluster: munged, slurmctld and slurmd as child processes, everything (key,
sockets, slurm.conf, state, spool, logs) in one temporary folder, nothing under /etc, /run or /var.

Needs the Debian packages slurm-wlm and munge, and root (SlurmUser=root; munged checks its key's owner).
Known to start in about 1.5 s and stop in under 2 s on a 2-core gVisor container (Slurm 22.05, munge 0.5.15).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REQUIRED = ("munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "scancel")
SBIN = "/usr/sbin"  # munged, slurmctld and slurmd live there, often not on PATH


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), SBIN])
    missing = [name for name in REQUIRED if shutil.which(name, path=path) is None]
    if missing:
        return f"Slurm or munge not installed (apt-get install -y slurm-wlm munge): no {', '.join(missing)}"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root (SlurmUser=root), and this is not root"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _node_hardware(env: dict) -> str:
    """The node line's hardware as slurmd sees it, memory 10% below, so the node is never drained for
    'Low RealMemory'."""
    out = subprocess.run(["slurmd", "-C"], env=env, capture_output=True, text=True, timeout=30).stdout
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    hw = dict(tok.partition("=")[::2] for tok in (out.splitlines() or [""])[0].split() if "=" in tok)
    hw = {key: hw[key] for key in keys if key in hw}
    hw.setdefault("CPUs", str(os.cpu_count() or 1))
    if "RealMemory" not in hw:
        kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        hw["RealMemory"] = str(kb // 1024)
    hw["RealMemory"] = str(max(1, int(int(hw["RealMemory"]) * 0.9)))
    return " ".join(f"{key}={value}" for key, value in hw.items())


def _pids(test) -> set[int]:
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            with contextlib.suppress(OSError):
                if test(Path("/proc") / name):
                    found.add(int(name))
    return found


def _with_conf(conf: Path):
    needle = f"SLURM_CONF={conf}".encode()
    return lambda proc: needle in (proc / "environ").read_bytes().split(b"\0")


def _is_stepd(proc: Path) -> bool:
    return (proc / "comm").read_text().strip() == "slurmstepd"


def _conf(root: Path, munge_socket: Path, env: dict, min_job_age: int, cred_expire: int) -> str:
    host = socket.gethostname().split(".")[0]
    user = pwd.getpwuid(os.getuid()).pw_name
    ctld_port, node_port = _free_ports(2)
    return f"""\
ClusterName=pytest
SlurmctldHost={host}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire={cred_expire}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
# Both scheduling loops every second (defaults 60 s and 30 s): a requeued or released job starts at once.
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MinJobAge={min_job_age}
KillWait=2
InactiveLimit=0
SlurmdTimeout=300
NodeName={host} NodeHostname={host} NodeAddr=127.0.0.1 {_node_hardware(env)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def slurm_cluster(tmp: Path, min_job_age: int = 300, cred_expire: int = 5, timeout: float = 60) -> Iterator[dict]:
    """Start the cluster; yield {"env": os.environ with SLURM_CONF and /usr/sbin, "conf", "root", "start_s"}.

    Finished jobs stay visible to squeue for `min_job_age` s; `cred_expire` (Slurm's default 120 s) is also
    how long a requeued job waits before it may start again."""
    start = time.monotonic()
    stepds_before = _pids(_is_stepd)
    root = Path(tmp).resolve() / "slurm"
    if len(str(root)) > 60:  # unix socket paths (munge's, slurmd's per step) must stay under 108 bytes
        root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # munged wants its socket's folder open to all (--force lets 0700 parents pass)
    os.chmod(root / "munge", 0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    munge_socket = root / "munge" / "munge.sock"
    conf = root / "slurm.conf"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SQUEUE_"))}
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + SBIN
    env["SLURM_CONF"] = str(conf)
    procs: dict[str, subprocess.Popen] = {}
    outputs = []

    def spawn(name: str, argv: list[str]) -> None:
        outputs.append(open(root / "log" / f"{name}.out", "ab"))
        procs[name] = subprocess.Popen(
            argv, env=env, stdout=outputs[-1], stderr=outputs[-1], stdin=subprocess.DEVNULL, cwd=root
        )

    def fail(message: str):
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in (root / "log").iterdir())
        raise RuntimeError(f"{message}\n{logs}")

    try:
        spawn(
            "munged",
            ["munged", "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
             f"--pid-file={root}/munge/munged.pid", f"--seed-file={root}/munge/munged.seed", "--num-threads=2"],
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not munge_socket.exists():
            if procs["munged"].poll() is not None or time.monotonic() > deadline:
                fail("munged did not start")
            time.sleep(0.05)
        conf.write_text(_conf(root, munge_socket, env, min_job_age, cred_expire))
        node = socket.gethostname().split(".")[0]
        spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])  # -i: ignore (no) saved state
        spawn("slurmd", ["slurmd", "-D", "-N", node, "-f", str(conf)])
        while True:
            for name in ("slurmctld", "slurmd"):
                if procs[name].poll() is not None:
                    fail(f"{name} exited with {procs[name].returncode}")
            state = subprocess.run(
                ["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=env, capture_output=True, text=True
            )
            if state.returncode == 0 and state.stdout.strip() == "idle":
                break
            if time.monotonic() > deadline:
                fail(f"node not idle after {timeout} s: {state.stdout!r} {state.stderr!r}")
            time.sleep(0.2)
        yield {"env": env, "conf": str(conf), "root": root, "start_s": time.monotonic() - start}
    finally:
        # Jobs first (slurmstepd outlives slurmd), then the daemons, then anything left that carries our
        # SLURM_CONF (job processes inherit it), then wait for slurmstepd's double-forked zombies.
        if procs.get("slurmctld") and procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", pwd.getpwuid(os.getuid()).pw_name], env=env, capture_output=True)
            end = time.monotonic() + 10
            while time.monotonic() < end:
                running = subprocess.run(["squeue", "-h", "-t", "R,CG", "-o", "%i"], env=env, capture_output=True)
                if running.returncode != 0 or not running.stdout.strip():
                    break
                time.sleep(0.2)
        ours = _pids(_with_conf(conf))
        for name in ("slurmd", "slurmctld", "munged"):
            proc = procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = _pids(_with_conf(conf))
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if not left:
                break
            time.sleep(0.5)
        end = time.monotonic() + 5
        while time.monotonic() < end and (
            any(Path(f"/proc/{pid}").exists() for pid in ours) or _pids(_is_stepd) - stepds_before
        ):
            time.sleep(0.1)
        for output in outputs:
            output.close()
        shutil.rmtree(root, ignore_errors=True)

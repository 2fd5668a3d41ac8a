"""deploy/: the Dockerfile, the Kubernetes manifests and the systemd units agree with the
CLI and with each other: image, user, Secret, volume, paths and shard arguments.

No Docker engine or cluster is needed: the files are parsed, every command line in them
is parsed by the CLI's own parser, and the Dockerfile's install step is rehearsed by
building the wheel from exactly the files it copies.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from worker import __version__
from worker.cli import build_parser
from worker.cli.run import query_from_args
from worker.journal import JOURNAL_ENV
from worker.journal.location import default_journal_path
from worker.shard import Shard

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
IMAGE = f"rum-playlist-ingest:{__version__}"
STATE = PurePosixPath("/var/lib/rum-playlist-ingest")


def run_args(argv: list[str]) -> argparse.Namespace:
    """Parse a command line as the tool would; an unknown option or bad value fails."""
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    return args


def within(path: str, folder: PurePosixPath) -> bool:
    return PurePosixPath(path).is_relative_to(folder)


# The Dockerfile


@dataclass(frozen=True)
class Instruction:
    name: str
    value: str

    def json(self) -> list[str]:
        words = json.loads(self.value)
        assert isinstance(words, list), f"{self.name} should use the JSON (exec) form"
        return words


def dockerfile() -> list[Instruction]:
    # Comment lines go first, as Docker drops them before joining continued lines.
    lines = [
        line
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if not line.startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        Instruction(name.upper(), value.strip())
        for name, _, value in (line.strip().partition(" ") for line in text.splitlines())
        if name
    ]


def only(name: str) -> Instruction:
    found = [i for i in dockerfile() if i.name == name]
    assert len(found) == 1, f"one {name} expected"
    return found[0]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for i in dockerfile():
        if i.name == "ENV":
            env |= dict(word.split("=", 1) for word in shlex.split(i.value))
    return env


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def image_uid() -> int:
    user = [i for i in dockerfile() if i.name == "USER"][-1].value
    return int(user.split(":")[0])


def test_the_base_is_a_slim_python_the_package_supports() -> None:
    args = {k: v for k, _, v in (i.value.partition("=") for i in dockerfile() if i.name == "ARG")}
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], only("FROM").value)
    match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", image)
    assert match, image
    oldest = re.fullmatch(r">=3\.(\d+)", pyproject()["project"]["requires-python"])
    assert oldest
    assert int(match[1]) >= int(oldest[1])


def test_the_tool_is_the_entrypoint_and_runs_as_a_non_root_user() -> None:
    names = [i.name for i in dockerfile()]
    assert only("ENTRYPOINT").json() == ["rum-playlist-ingest"]
    assert "rum-playlist-ingest" in pyproject()["project"]["scripts"]
    assert image_uid() > 0
    # Installed as root, then run as the user: USER comes after the install, before the end.
    last_run = max(i for i, name in enumerate(names) if name == "RUN")
    assert last_run < names.index("USER") < names.index("ENTRYPOINT")


def test_the_journal_lives_on_the_volume() -> None:
    assert only("VOLUME").json() == [str(STATE)]
    assert only("WORKDIR").value == str(STATE)
    assert within(dockerfile_env()[JOURNAL_ENV], STATE)


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY."""
    return [
        (words[:-1], words[-1])
        for words in (i.value.split() for i in dockerfile() if i.name == "COPY")
    ]


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [source for sources, _ in copies() for source in sources]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is left out of the build context"


def test_the_install_step_builds_from_exactly_the_copied_files(tmp_path: Path) -> None:
    """What the Dockerfile's `pip install` builds, rehearsed offline: without network,
    the build backend must already be installed beside the tests."""
    pytest.importorskip("hatchling", reason="the build backend is needed offline")
    image_root = tmp_path / "image"
    for sources, destination in copies():
        for source in sources:
            target = image_root / destination.lstrip("/")
            if destination.endswith("/"):
                target /= Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target)
    install = next(i.value for i in dockerfile() if i.name == "RUN" and "pip install" in i.value)
    requirement = shlex.split(install.split("pip install", 1)[1])[0]
    # A plain install: the fast path (uvloop, orjson) comes with the dependencies.
    shape = re.fullmatch(r"(/[^\[]+)", requirement)
    assert shape, f"pip install {requirement}: expected /path, as a user installs it"
    (source,) = shape.groups()
    dependencies = " ".join(pyproject()["project"]["dependencies"])
    assert "uvloop" in dependencies
    assert "orjson" in dependencies

    wheels = tmp_path / "wheels"
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            *offline,
            "--wheel-dir",
            str(wheels),
            str(image_root / source.lstrip("/")),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("rum_playlist_ingest-*.whl")
    assert f"-{__version__}-" in wheel.name
    with zipfile.ZipFile(wheel) as built:
        names = built.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "rum-playlist-ingest = worker.cli:main" in built.read(entry_points).decode()
    assert {"worker/cli/__init__.py", "worker/shard.py", "worker/sandbox/__init__.py"} <= set(names)


def test_the_fast_extra_is_empty_and_no_page_tells_of_it() -> None:
    """uvloop and orjson are plain dependencies (checked above): `fast` adds nothing and
    is kept for old instructions only, so no page or deploy file may name it."""
    assert pyproject()["project"]["optional-dependencies"]["fast"] == []
    pages = [ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")]
    pages += [path for path in DEPLOY.rglob("*") if path.is_file()]
    naming = [
        str(p.relative_to(ROOT)) for p in pages if re.search(r"`fast`|\[fast\]", p.read_text())
    ]
    assert not naming, f"these name the empty `fast` extra: {naming}"


# Kubernetes


def manifests(name: str) -> dict[str, dict[str, Any]]:
    """The documents of one file, by kind."""
    documents = yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())
    return {document["kind"]: document for document in documents}


SECRET = manifests("secret.example.yaml")["Secret"]


@dataclass(frozen=True)
class Workload:
    """The parts of a CronJob or Job that the checks below look at."""

    job: dict[str, Any]
    pod: dict[str, Any]
    claim: dict[str, Any]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return container  # type: ignore[no-any-return]

    def env(self, **downward: str) -> dict[str, str]:
        """The container's environment, over the image's; `downward` stands in for the
        values Kubernetes fills in (fieldRef)."""
        env = dockerfile_env()
        for var in self.container["env"]:
            env[var["name"]] = var["value"] if "value" in var else downward[var["name"]]
        return env

    def argv(self, **downward: str) -> list[str]:
        """The arguments as the container receives them: Kubernetes expands `$(NAME)`
        only for variables the container defines, and leaves the others as they are."""
        env = self.env(**downward)

        def expand(match: re.Match[str]) -> str:
            assert match[1] in env, f"$({match[1]}) is not defined in the container's env"
            return env[match[1]]

        return [re.sub(r"\$\((\w+)\)", expand, arg) for arg in self.container["args"]]

    def mounts(self) -> dict[str, PurePosixPath]:
        return {m["name"]: PurePosixPath(m["mountPath"]) for m in self.container["volumeMounts"]}

    def volume(self, name: str) -> dict[str, Any]:
        return next(v for v in self.pod["volumes"] if v["name"] == name)


CRONJOBS = ("cronjob.yaml", "query-cronjob.yaml")
"""The nightly run of a file, and the nightly run of a RUM query."""

QUERY_SHARDS = "query-shards-cronjob.yaml"
"""The nightly run of a RUM query in shards: a CronJob whose Job is Indexed."""


def cronjob(name: str) -> Workload:
    cron = manifests(name)
    nightly = cron["CronJob"]["spec"]["jobTemplate"]["spec"]
    return Workload(nightly, nightly["template"]["spec"], cron["PersistentVolumeClaim"])


def workloads() -> tuple[Workload, Workload, Workload, Workload]:
    """The two CronJobs', the Indexed Job's and the sharded query CronJob's."""
    indexed = manifests("indexed-job.yaml")
    backfill = indexed["Job"]["spec"]
    return (
        *(cronjob(name) for name in CRONJOBS),
        Workload(backfill, backfill["template"]["spec"], indexed["PersistentVolumeClaim"]),
        cronjob(QUERY_SHARDS),
    )


DOWNWARD = {"JOB_COMPLETION_INDEX": "0", "DD_AGENT_HOST": "10.0.0.1"}


@pytest.mark.parametrize(
    "workload", workloads(), ids=["cronjob", "query-cronjob", "indexed-job", "query-shards-cronjob"]
)
def test_workload_runs_the_image_with_keys_from_the_secret_and_state_on_the_claim(
    workload: Workload,
) -> None:
    container, mounts = workload.container, workload.mounts()
    assert container["image"] == IMAGE
    assert "command" not in container  # the image's entrypoint is the tool
    args = run_args(workload.argv(**DOWNWARD))

    keys = workload.volume("keys")["secret"]
    assert keys["secretName"] == SECRET["metadata"]["name"]
    files = {item["key"]: mounts["keys"] / item["path"] for item in keys["items"]}
    assert set(files) == set(SECRET["stringData"])
    assert {args.api_key_file, args.app_key_file} == {str(path) for path in files.values()}
    assert keys["defaultMode"] == 0o440  # readable by the pod's group (fsGroup), no one else

    state = workload.volume("state")["persistentVolumeClaim"]["claimName"]
    assert state == workload.claim["metadata"]["name"]
    journal = args.journal or workload.env(**DOWNWARD)[JOURNAL_ENV]
    for path in (journal, args.report, args.dead_letter, *args.inputs):
        assert within(path, mounts["state"]), path
    assert mounts["state"] == STATE  # the image's volume

    security = workload.pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["fsGroup"] == image_uid()
    assert workload.pod["restartPolicy"] == "Never"
    assert workload.pod["terminationGracePeriodSeconds"] > args.grace


def failure_rules(workload: Workload) -> dict[str, set[int]]:
    rules: dict[str, set[int]] = {}
    for rule in workload.job["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule:
            rules.setdefault(rule["action"], set()).update(rule["onExitCodes"]["values"])
    return rules


@pytest.mark.parametrize("name", CRONJOBS)
def test_cronjob_never_overlaps_and_backs_off(name: str) -> None:
    cron = manifests(name)["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    nightly = cronjob(name)
    assert 0 < nightly.job["backoffLimit"] <= 6
    assert nightly.job["podReplacementPolicy"] == "Failed"
    assert failure_rules(nightly) == {"FailJob": {1, 2, 3}}


def test_the_query_cronjob_searches_from_last_with_a_journal_that_outlives_its_pods(
    tmp_path: Path,
) -> None:
    """`--from last` reads the last completed search from the journal: the journal must
    be on the claim (not a pod's own disk), and not the file CronJob's."""
    query = cronjob("query-cronjob.yaml")
    args = run_args(query.argv(**DOWNWARD))
    assert args.inputs == []
    assert args.query
    assert args.playlist
    assert (args.from_, args.first_from) == ("last", "now-7d")
    assert not args.no_journal
    assert within(args.journal, query.mounts()["state"])
    assert (
        query.volume("state")["persistentVolumeClaim"]["claimName"]
        == (query.claim["metadata"]["name"])
    )
    assert query.claim["metadata"]["name"] != cronjob("cronjob.yaml").claim["metadata"]["name"]
    # The CLI's own check of the search's options (a query, a playlist, --from last
    # with a journal to read it from) accepts them, as it would in the pod.
    options = query_from_args(args, journal=tmp_path / "journal.sqlite3")
    assert options is not None
    assert (options.query, options.from_text) == (args.query, "last")


def indexed_by_shard(workload: Workload) -> int:
    """Checks what every sharded Job shares: an Indexed Job whose pod K runs `--shard
    K/N` (N its completions, in every per-shard file name too), whose failures are per
    index for a row's and the whole Job's for a refusal or an abort, on a volume that
    pods on any node mount. Returns N."""
    spec = workload.job
    count: int = spec["completions"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] <= count
    raw = workload.container["args"]
    assert raw[raw.index("--shard") + 1] == f"$(JOB_COMPLETION_INDEX)/{count}"
    assert {int(n) for n in re.findall(r"-of-(\d+)", " ".join(raw))} == {count}
    assert spec["backoffLimitPerIndex"] > 0
    assert spec["podReplacementPolicy"] == "Failed"
    assert failure_rules(workload) == {"FailIndex": {1}, "FailJob": {2, 3}}
    assert workload.claim["spec"]["accessModes"] == ["ReadWriteMany"]
    return count


def test_indexed_job_gives_each_pod_its_own_shard() -> None:
    *_, indexed, _ = workloads()
    count = indexed_by_shard(indexed)

    outputs: list[set[str]] = [set(), set()]
    for index in range(count):
        args = run_args(indexed.argv(**{**DOWNWARD, "JOB_COMPLETION_INDEX": str(index)}))
        assert args.shard == Shard(index, count)  # parsed by the option's type
        outputs[0].add(args.report)
        outputs[1].add(args.dead_letter)
    assert all(len(paths) == count for paths in outputs)  # no two shards share a file


def test_the_sharded_query_cronjob_gives_each_pod_its_shard_journal_and_report(
    tmp_path: Path,
) -> None:
    """Each pod searches its own hours from its own journal: no `--journal` (one file for
    every shard would let only one start), the default per-shard journal on a claim that
    pods on any node mount, and fixed times where `--shard` refuses date math."""
    cron = manifests(QUERY_SHARDS)["CronJob"]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["schedule"] == manifests("query-cronjob.yaml")["CronJob"]["spec"]["schedule"]
    query = cronjob(QUERY_SHARDS)
    count = indexed_by_shard(query)
    assert query.claim["metadata"]["name"] not in {
        cronjob(name).claim["metadata"]["name"] for name in CRONJOBS
    }

    files: list[set[object]] = [set(), set(), set()]
    for index in range(count):
        downward = {**DOWNWARD, "JOB_COMPLETION_INDEX": str(index)}
        args = run_args(query.argv(**downward))
        assert args.shard == Shard(index, count)
        assert args.journal is None, "one --journal for every shard: all but one refused"
        assert not args.no_journal
        assert (args.from_, args.inputs) == ("last", [])
        journal = default_journal_path(args.shard, query.env(**downward))
        assert within(str(journal), query.mounts()["state"])
        files[0].add(journal)
        files[1].add(args.report)
        files[2].add(args.dead_letter)
        # The CLI's own checks, as in the pod: --first-from a fixed time with --shard.
        options = query_from_args(args, journal=tmp_path / journal.name)
        assert options is not None
    assert all(len(paths) == count for paths in files)  # no two shards share a file


# systemd


def unit(name: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's settings by section, in order; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    section = ""
    text = re.sub(r"\\\n", " ", (DEPLOY / "systemd" / name).read_text())
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            sections[section] = []
        else:
            key, _, value = line.partition("=")
            sections[section].append((key.strip(), value.strip()))
    return sections


def setting(settings: list[tuple[str, str]], key: str) -> str:
    (value,) = [v for k, v in settings if k == key]
    return value


SPECIFIERS = {"%S": "/var/lib", "%d": "/run/credentials/rum-playlist-ingest.service"}


def expand_unit(value: str, environment: Mapping[str, str]) -> str:
    value = re.sub(r"%[Sd]", lambda m: SPECIFIERS[m[0]], value)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: environment[m[1]], value)


def test_systemd_service_runs_one_tool_run_with_credentials_and_state() -> None:
    service = unit("rum-playlist-ingest.service")["Service"]
    assert setting(service, "Type") == "oneshot"
    assert setting(service, "User") != "root"
    environment = dict(expand_unit(v, {}).split("=", 1) for k, v in service if k == "Environment")
    argv = shlex.split(expand_unit(setting(service, "ExecStart"), environment))
    assert PurePosixPath(argv[0]).name == "rum-playlist-ingest"
    args = run_args(argv[1:])

    credentials = dict(v.split(":", 1) for k, v in service if k == "LoadCredential")
    folder = PurePosixPath(SPECIFIERS["%d"])
    assert {args.api_key_file, args.app_key_file} == {str(folder / c) for c in credentials}
    state = PurePosixPath("/var/lib") / setting(service, "StateDirectory")
    for path in (args.journal, args.report, args.dead_letter, *args.inputs):
        assert within(path, state), path


def test_systemd_timer_starts_the_service_nightly_and_catches_up() -> None:
    timer = unit("rum-playlist-ingest.timer")
    assert setting(timer["Timer"], "Unit") == "rum-playlist-ingest.service"
    assert setting(timer["Timer"], "OnCalendar")
    assert setting(timer["Timer"], "Persistent") == "true"
    assert setting(timer["Install"], "WantedBy") == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units() -> None:
    units = [
        str(DEPLOY / "systemd" / n)
        for n in ("rum-playlist-ingest.service", "rum-playlist-ingest.timer")
    ]
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Complaints about the units' text name the file and line ("x.service:12: Unknown
    # key..."); that the tool is not installed on this machine is not one of them.
    assert not re.findall(r"^.*\.(?:service|timer):\d+:.*$", result.stderr, re.M), result.stderr

#!/usr/bin/env python3
"""Builds what docs/kubernetes/Containerfile's build stage builds, from
exactly what it copies: a throw-away directory gets the build context's
paths its COPY lines name (nothing else of the repository), then each of
its RUN commands runs there with sh, as in the image. A source file the
binary needs but the Containerfile leaves out fails here, not at
`docker build` time.

usage: containerfile-build.py [CONTAINERFILE]   (from the repository root)
"""
import os
import shlex
import shutil
import subprocess
import sys
import tempfile


def instructions(text):
    """(INSTRUCTION, arguments) per logical line, continuations joined."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def main(containerfile):
    steps = instructions(open(containerfile).read())
    froms = [i for i, (w, _) in enumerate(steps) if w == "FROM"]
    build = steps[froms[0] + 1 : froms[1] if len(froms) > 1 else len(steps)]
    root = tempfile.mkdtemp(prefix="ops-agent-containerfile-")
    # The build's target directory is kept between local runs (it holds
    # only what the copy compiled); CI starts without one either way.
    cache = os.path.abspath("target/containerfile-build")
    os.makedirs(cache, exist_ok=True)
    workdir, copied, ran = "/", [], 0
    try:
        for word, args in build:
            if word == "WORKDIR":
                workdir = os.path.join(workdir, args)
                os.makedirs(root + workdir, exist_ok=True)
                if not os.path.lexists(root + workdir + "/target"):
                    os.symlink(cache, root + workdir + "/target")
            elif word == "COPY":
                parts = shlex.split(args)
                if any(p.startswith("--") for p in parts):
                    sys.exit(f"containerfile-build: COPY with flags is not handled: {args}")
                *sources, dest = parts
                into = os.path.normpath(os.path.join(root + workdir, dest))
                for src in sources:
                    target = into if len(sources) == 1 and not dest.endswith("/") else os.path.join(into, os.path.basename(src))
                    if os.path.isdir(src):
                        shutil.copytree(src, target, symlinks=True)
                    else:
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        shutil.copy2(src, target)
                    copied.append(src)
            elif word == "RUN":
                print(f"containerfile-build: in {workdir}: RUN {args}", flush=True)
                done = subprocess.run(["sh", "-c", args], cwd=root + workdir)
                if done.returncode != 0:
                    sys.exit(
                        f"containerfile-build: FAILED: RUN exited {done.returncode} on a copy of "
                        f"only {' '.join(copied)}: does the build need a path the Containerfile "
                        "does not copy?"
                    )
                ran += 1
            elif word in ("ENV", "ARG", "LABEL", "USER"):
                sys.exit(f"containerfile-build: {word} is not handled: add it to this script")
        if not ran:
            sys.exit("containerfile-build: the build stage runs nothing")
        print(f"containerfile-build: built from {' '.join(copied)} only ({ran} RUN)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/kubernetes/Containerfile")

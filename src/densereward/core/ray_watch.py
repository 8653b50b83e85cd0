"""``python -m densereward.core.ray_watch DRIVER_PID``: stop the Ray instance a driver started, if
the driver dies without shutting it down.

Ray ties its GCS and raylet to the driver, but not the agents the raylet starts
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``): a driver killed by SIGKILL or the OOM
killer leaves them running for good. The watcher is started before ``ray.init``, so a driver
killed while Ray starts is covered too. While the driver lives it notes every process of the
instance: the driver's children that run Ray's own programs (found by the Ray package folder on
their command line) and all of their descendants. Once the driver is gone it terminates those
still alive (checked by start time, so a reused process id is left alone). A driver that joins
a cluster starts no such process, and nothing is touched.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from typing import Any

import psutil


def _ray_folder() -> str:
    spec = importlib.util.find_spec("ray")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return locations[0] if locations else os.sep + "ray" + os.sep


def _instance(driver: Any, folder: str) -> dict[int, float]:
    found: dict[int, float] = {}
    for child in driver.children():
        try:
            if child.pid == os.getpid() or not any(folder in part for part in child.cmdline()):
                continue
            for process in [child, *child.children(recursive=True)]:
                found[process.pid] = process.create_time()
        except psutil.Error:
            continue
    return found


def _add_descendants(known: dict[int, float]) -> None:
    """What the noted processes started after the last look (an agent the raylet spawned as
    the driver died), until nothing new appears."""
    while True:
        found: dict[int, float] = {}
        for pid, started in known.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() != started:
                    continue
                for child in process.children(recursive=True):
                    if child.pid not in known:
                        found[child.pid] = child.create_time()
            except psutil.Error:
                continue
        if not found:
            return
        known.update(found)


def watch(driver_pid: int, interval: float = 0.2) -> None:
    folder = _ray_folder()
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return
    known: dict[int, float] = {}
    while True:
        try:
            if driver.status() == psutil.STATUS_ZOMBIE:
                break
            known.update(_instance(driver, folder))
        except psutil.Error:  # gone, and already reaped
            break
        time.sleep(interval)
    time.sleep(0.5)  # a clean ray.shutdown() is already stopping them
    _add_descendants(known)
    survivors = []
    for pid, started in known.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.terminate()
                survivors.append(process)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(survivors, timeout=5)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            continue


if __name__ == "__main__":
    watch(int(sys.argv[1]))

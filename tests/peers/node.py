"""A one-node cluster on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and a kubelet on a private containerd, with pods on runc.

Everything the node changes on the host is undone on ``stop()``: the kubelet's sysctls are
restored, mounts under the state dir unmounted, the CNI bridge and the pods' network
namespaces deleted, containerd's shims killed. Names are unique per start (bridge, CNI
network, pod subnet), and containerd's sockets, root and state live in the state dir.

No registry is reachable: images are docker-archive tarballs imported with ``ctr``. The
busybox image (``BUSYBOX_IMAGE``) is the busybox rootfs that the docker peer uses; the pod
sandbox (pause) image is the same rootfs whose command sleeps forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import socket
import subprocess
import tarfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from ._util import (
    ManagedProcess,
    PeerUnavailableError,
    free_port,
    kill_processes_mentioning,
    provisioned,
    wait_until,
)
from .kube import KubePeer, write_kubeconfig

log = logging.getLogger(__name__)

BUSYBOX_IMAGE = "docker.io/library/busybox:1.35"
PAUSE_IMAGE = "docker.io/library/infra-observer-pause:1"
NODE_NAME = "localhost"
# The kubelet sets these on start; they are the host's and are put back on stop.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
NETNS_DIR = Path("/run/netns")
# Host paths the kubelet and the CNI plugins write outside the state dir, whatever it is.
CNI_RESULTS_DIR = Path("/var/lib/cni/results")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
HOST_DIRS = (
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    CONTAINER_LOG_LINKS,
    CNI_RESULTS_DIR,
    Path("/var/lib/cni"),
    NETNS_DIR,
)


def docker_archive(layer: Path, *, tag: str, config: Mapping[str, Any], out: Path) -> Path:
    """A ``docker save`` style tarball of one layer (an uncompressed rootfs tar)."""
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    image_config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": dict(config),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    layer_name = diff_id.removeprefix("sha256:") + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    ).encode()
    with tarfile.open(out, "w") as tar:
        for name, data in (("manifest.json", manifest), (config_name, image_config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(layer), arcname=layer_name)
    return out


def listing(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.is_dir() else set()


def read_sysctl(name: str) -> str:
    return (Path("/proc/sys") / name).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value)


class TcpForwarder:
    """Forwards connections accepted on ``listen`` to ``target``, a thread per direction.

    There is no kube-proxy: this serves the ``kubernetes`` Service's address, and makes a
    peer on loopback reachable from pods at the bridge's gateway address.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self._server = socket.create_server(listen)
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._open.update((client, upstream))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.close()
        for conn in list(self._open):
            conn.close()


class NodePeer(KubePeer):
    """KubePeer plus a real node (``localhost``) that runs pods.

    Differences from KubePeer's apiserver: ``--authorization-mode=Node,RBAC`` and the
    ServiceAccount admission plugin enabled, so pods get the token volume a kubelet mounts.
    """

    def __init__(self) -> None:
        super().__init__()
        for binary in ("kubelet", "kube_scheduler", "kube_controller_manager"):
            provisioned(binary)
        self.cni_bin_dir = provisioned("cni_bin_dir")
        suffix = secrets.token_hex(3)
        self.bridge = f"ion{suffix}"
        self.network = f"infra-observer-node-{suffix}"
        octet = secrets.randbelow(256)
        self.pod_subnet = f"10.244.{octet}.0/24"
        self.gateway = f"10.244.{octet}.1"
        # The `kubernetes` Service's address: the first of the service range, which the
        # apiserver's self-signed certificate names.
        self.service_range = f"10.96.{octet}.0/24"
        self.service_ip = f"10.96.{octet}.1"
        self._forwarders: list[TcpForwarder] = []
        self.containerd_socket = self.state_dir / "containerd" / "containerd.sock"
        self.kubelet_port = free_port()
        self.kubelet_healthz_port = free_port()
        self._saved_sysctls: dict[str, str] = {}
        self._netns_before: set[str] = set()
        self._cni_results_before: set[str] = set()
        self._host_dirs_before: set[Path] = set()
        self._node_procs: list[ManagedProcess] = []

    def _apiserver_argv(self) -> list[str]:
        argv = [
            a
            for a in super()._apiserver_argv()
            if a != "--disable-admission-plugins=ServiceAccount"
        ]
        replaced = {
            "--authorization-mode=RBAC": "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.0.0.0/24": (
                f"--service-cluster-ip-range={self.service_range}"
            ),
        }
        return [replaced.get(a, a) for a in argv]

    # ------------------------------------------------------------ lifecycle

    def start(self) -> NodePeer:
        super().start()
        try:
            self._saved_sysctls = {name: read_sysctl(name) for name in KUBELET_SYSCTLS}
            self._netns_before = listing(NETNS_DIR)
            self._cni_results_before = listing(CNI_RESULTS_DIR)
            self._host_dirs_before = {d for d in HOST_DIRS if d.exists()}
            self._create_bridge()
            self.forward(443, self.port, address=self.service_ip)
            self._start_containerd()
            self.import_image(self._busybox_archive(BUSYBOX_IMAGE, ["sh"]))
            self.import_image(self._busybox_archive(PAUSE_IMAGE, ["sleep", "2147483647"]))
            self._start_control_plane()
            self._start_kubelet()
            self.wait_node_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _create_bridge(self) -> None:
        """The CNI bridge, made before any pod so it can carry the Service address too (the
        bridge plugin adopts an existing bridge).

        Its MAC address is set, not left to the kernel: a bridge without one takes the
        lowest MAC of its ports, so it changes whenever the pod owning that port goes away.
        The other pods still have the gateway at the old MAC in their ARP cache and reach
        nothing on the host (the apiserver, the Prefect server) until that entry expires,
        up to about 50 s, and their probes fail meanwhile.
        """
        prefix = self.pod_subnet.rsplit("/", 1)[1]
        # Locally administered, unicast.
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        for command in (
            ["link", "add", self.bridge, "address", mac, "type", "bridge"],
            ["addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge],
            ["addr", "add", f"{self.service_ip}/32", "dev", self.bridge],
            ["link", "set", self.bridge, "up"],
        ):
            result = subprocess.run(["ip", *command], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise PeerUnavailableError(f"ip {' '.join(command)}: {result.stderr.strip()}")

    def forward(self, port: int, host_port: int, *, address: str | None = None) -> str:
        """Make ``127.0.0.1:host_port`` reachable from pods at ``address:port`` (default:
        the bridge's gateway); returns ``address:port``."""
        listen = (address or self.gateway, port)
        self._forwarders.append(TcpForwarder(listen, ("127.0.0.1", host_port)))
        return f"{listen[0]}:{port}"

    def stop(self) -> None:
        # Controllers first (nothing recreates pods), then the pods while the kubelet still
        # runs: a sandbox torn down by a killed kubelet leaks its network namespace.
        for proc in reversed(self._node_procs):
            if proc.name.startswith("kube-") and proc.name != "kubelet":
                proc.stop()
        if any(p.name == "kubelet" and p.running() for p in self._node_procs):
            try:
                self._drain()
            except Exception as exc:  # stopping goes on: the rest still has to be undone
                log.warning("node drain failed, a pod network namespace may remain: %s", exc)
        for proc in reversed(self._node_procs):
            proc.stop()
        self._node_procs = []
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders = []
        # containerd's shims leave its process group; the state dir in their argv is ours.
        kill_processes_mentioning(str(self.state_dir))
        for name, value in self._saved_sysctls.items():
            write_sysctl(name, value)
        self._remove_host_state()
        super().stop()

    def _drain(self, timeout: float = 60) -> None:
        """Delete every pod at once and wait until containerd runs no task: a sandbox's
        network is torn down before its task stops."""
        with httpx.Client(verify=self._ssl_context(), timeout=10) as client:
            headers = {"Authorization": f"Bearer {self.token}"}
            pods = client.get(f"{self.server}/api/v1/pods", headers=headers).json()
            for pod in pods.get("items", []):
                meta = pod["metadata"]
                client.delete(
                    f"{self.server}/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    headers=headers,
                    params={"gracePeriodSeconds": "0"},
                )
        wait_until(
            lambda: True if not self.ctr("tasks", "list", "-q").stdout.strip() else None,
            timeout=timeout,
            interval=0.5,
            what="pods removed by the kubelet",
        )

    def _remove_host_state(self) -> None:
        """Undo what the kubelet and CNI wrote outside the state dir: only what appeared
        since start, so another node's state is left alone."""
        for name in listing(NETNS_DIR) - self._netns_before:
            if name.startswith("cni-"):
                subprocess.run(["ip", "netns", "delete", name], check=False)
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)
        for name in listing(CNI_RESULTS_DIR) - self._cni_results_before:
            (CNI_RESULTS_DIR / name).unlink(missing_ok=True)
        for name in listing(CONTAINER_LOG_LINKS):
            link = CONTAINER_LOG_LINKS / name
            if link.is_symlink() and os.readlink(link).startswith(f"{self.state_dir}/"):
                link.unlink()
        for directory in HOST_DIRS:
            if directory not in self._host_dirs_before:
                # The kubelet's registration socket is its own; anything else stays.
                (directory / "kubelet.sock").unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    directory.rmdir()

    # ------------------------------------------------------------ containerd

    def _write_cni_config(self) -> Path:
        conf_dir = self.state_dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        ipam = {
            "type": "host-local",
            "ranges": [[{"subnet": self.pod_subnet}]],
            "dataDir": str(self.state_dir / "cni" / "ipam"),
        }
        conflist = {
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [
                {"type": "bridge", "bridge": self.bridge, "isGateway": True,
                 "isDefaultGateway": True, "ipMasq": False, "ipam": ipam},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }  # fmt: skip
        # containerd 1.6 reads the directory at start: the file must exist before.
        (conf_dir / "10-infra-observer.conflist").write_text(json.dumps(conflist))
        return conf_dir

    def _containerd_config(self, conf_dir: Path) -> str:
        base = self.state_dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{base / "root"}"
state = "{base / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{base / "ttrpc.sock"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE here: runc must not lower oom_score_adj below the parent's.
  restrict_oom_score_adj = true
  disable_apparmor = true
[{cri}.cni]
  bin_dir = "{self.cni_bin_dir}"
  conf_dir = "{conf_dir}"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
"""

    def _start_containerd(self) -> None:
        conf_dir = self._write_cni_config()
        config = self.state_dir / "containerd.toml"
        config.write_text(self._containerd_config(conf_dir))
        proc = self._start_process(
            "containerd", [provisioned("containerd_bin"), "--config", config]
        )
        proc.wait_ready(lambda: True if self.ctr("version").returncode == 0 else None, timeout=30)

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(provisioned("ctr")), "--address", str(self.containerd_socket),
             "--namespace", "k8s.io", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def import_image(self, archive: Path) -> None:
        """Import a docker-archive tarball (``docker save`` output) into the CRI's namespace."""
        result = self.ctr("images", "import", "--no-unpack=false", str(archive))
        if result.returncode != 0:
            raise PeerUnavailableError(f"ctr images import {archive}: {result.stderr.strip()}")

    def _busybox_archive(self, tag: str, cmd: list[str]) -> Path:
        out = self.state_dir / (tag.rsplit("/", 1)[-1].replace(":", "-") + ".tar")
        config = {"Cmd": cmd, "Env": ["PATH=/bin"]}
        return docker_archive(provisioned("busybox_rootfs"), tag=tag, config=config, out=out)

    # ------------------------------------------------------------ control plane + kubelet

    def _start_process(self, name: str, argv: list[str | os.PathLike[str]]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_path=self.state_dir / f"{name}.log")
        self._node_procs.append(proc)
        proc.start()
        return proc

    def _start_control_plane(self) -> None:
        common = [
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        self._start_process(
            "kube-scheduler",
            [provisioned("kube_scheduler"), *common, f"--secure-port={free_port()}"],
        )
        self._start_process(
            "kube-controller-manager",
            [
                provisioned("kube_controller_manager"),
                *common,
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.state_dir / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                f"--flex-volume-plugin-dir={self.state_dir / 'flexvolume'}",
                "--use-service-account-credentials=false",
            ],
        )

    def _kubelet_config(self) -> dict[str, Any]:
        loose = {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # The hosts are cgroup v1: kubelet >= 1.35 refuses it unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz_port,
            "readOnlyPort": 0,
            "podLogsDir": str(self.state_dir / "pod-logs"),
            "volumePluginDir": str(self.state_dir / "volume-plugins"),
            # Else the kubelet writes iptables rules into the host's tables.
            "makeIPTablesUtilChains": False,
            "evictionHard": loose,
            "imageGCHighThresholdPercent": 100,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
        }

    def _start_kubelet(self) -> None:
        self.forward(self.kubelet_port, self.kubelet_port)
        config = self.state_dir / "kubelet.json"
        config.write_text(json.dumps(self._kubelet_config()))
        kubeconfig = write_kubeconfig(
            self.state_dir / "kubelet.kubeconfig",
            server=self.server,
            ca_file=self.ca_file,
            token=self.token,
            user="kubelet",
        )
        self._start_process(
            "kubelet",
            [
                provisioned("kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.state_dir / 'kubelet'}",
                f"--cert-dir={self.state_dir / 'kubelet-pki'}",
                f"--hostname-override={NODE_NAME}",
                # The kubelet takes no loopback node IP (the Node would get no address, and
                # the apiserver could not reach it for a pod's logs): the bridge's gateway,
                # forwarded to the kubelet on loopback.
                f"--node-ip={self.gateway}",
                "--v=1",
            ],
        )

    def wait_node_ready(self, timeout: float = 90) -> None:
        kubelet = self._node_procs[-1]

        def ready() -> bool | None:
            node = self._get_json(f"/api/v1/nodes/{NODE_NAME}")
            conditions = node.get("status", {}).get("conditions", [])
            return (
                True
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
                else None
            )

        kubelet.wait_ready(ready, timeout=timeout, interval=0.5, what="kubelet (node Ready)")

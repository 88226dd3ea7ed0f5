"""docker-py 7.2's volume calls against `wrun daemon` (run by
tests/all/daemon_volumes.rs with DOCKER_HOST set to the daemon's socket)."""

import docker

client = docker.from_env()

vol = client.volumes.create("pyvol", labels={"suite": "py"})
assert vol.name == "pyvol", vol.attrs
assert vol.attrs["Driver"] == "local", vol.attrs
assert vol.attrs["Mountpoint"].endswith("/volumes/pyvol/_data"), vol.attrs
assert client.volumes.get("pyvol").attrs["Labels"] == {"suite": "py"}
listed = client.volumes.list(filters={"label": "suite=py"})
assert [v.name for v in listed] == ["pyvol"], listed

anonymous = client.volumes.create()
assert len(anonymous.name) == 64, anonymous.name
assert "com.docker.volume.anonymous" in anonymous.attrs["Labels"], anonymous.attrs

try:
    client.volumes.get("ghost")
    raise AssertionError("a missing volume must raise")
except docker.errors.NotFound as e:
    assert "get ghost: no such volume" in str(e), e

try:
    client.volumes.create("other", driver="nfs")
    raise AssertionError("another driver must be refused")
except docker.errors.APIError as e:
    assert e.status_code == 400 and "nfs" in str(e), e

# A container that names the volume (docker-py sends it in Binds) holds it.
box = client.containers.create(
    "filetool", ["write", "/data/f", "hi"], volumes={"pyvol": {"bind": "/data", "mode": "rw"}}
)
try:
    vol.remove()
    raise AssertionError("a volume in use must not be removed")
except docker.errors.APIError as e:
    assert e.status_code == 409, e
    assert "volume is in use - [%s]" % box.id in str(e), e

# Prune: the anonymous volume only; the one in use stays even with `all`.
report = client.volumes.prune()
assert report["VolumesDeleted"] == [anonymous.name], report
report = client.volumes.prune(filters={"all": "true"})
assert report["VolumesDeleted"] == [], report

box.remove()
vol.remove()
assert client.volumes.list() == []
# (docker-py 7.2's `remove_volume(force=True)` never sends `force`, so a
# missing volume is a NotFound whatever it asks.)
try:
    vol.remove(force=True)
    raise AssertionError("a removed volume must be gone")
except docker.errors.NotFound as e:
    assert "no such volume" in str(e), e

print("docker-py volumes: all passed")

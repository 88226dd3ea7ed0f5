"""docker-py 7.2's network calls against `wrun daemon` (run by
tests/all/daemon_networks.rs with DOCKER_HOST set to the daemon's socket;
the images `echo` and `client` are built there)."""

import docker

client = docker.from_env()

net = client.networks.create("pynet", labels={"suite": "py"})
assert len(net.id) == 12, net.id
assert net.name == "pynet", net.attrs
got = client.networks.get("pynet")
assert got.attrs["Labels"] == {"suite": "py"}, got.attrs
assert got.attrs["Driver"] == "bridge", got.attrs
assert got.attrs["IPAM"]["Config"][0]["Subnet"].endswith(".0/24"), got.attrs
names = sorted(n.name for n in client.networks.list())
assert names == ["bridge", "host", "none", "pynet"], names
assert [n.name for n in client.networks.list(filters={"label": "suite=py"})] == ["pynet"]
assert [n.name for n in client.networks.list(names=["pynet"])] == ["pynet"]

try:
    client.networks.get("ghost")
    raise AssertionError("a missing network must raise")
except docker.errors.NotFound as e:
    assert "network ghost not found" in str(e), e

try:
    client.networks.create("pynet")
    raise AssertionError("a duplicate must be refused")
except docker.errors.APIError as e:
    assert e.status_code == 409, e

# Connected before it starts, with an alias; reached by it.
server = client.containers.create("echo", ["0.0.0.0:7000"], name="pyserver")
net.connect(server, aliases=["backend"])
server.start()
server.reload()
endpoint = server.attrs["NetworkSettings"]["Networks"]["pynet"]
assert endpoint["Aliases"] == ["backend"], endpoint
assert endpoint["IPAddress"].startswith("10."), endpoint
net.reload()
assert [c.name for c in net.containers] == ["pyserver"], net.attrs

for _ in range(600):
    if b"listening on" in server.logs():
        break
    import time

    time.sleep(0.05)
out = client.containers.run("client", ["backend:7000", "py"], network="pynet", remove=True)
assert b"reply: py" in out, out

try:
    net.remove()
    raise AssertionError("a network in use must not be removed")
except docker.errors.APIError as e:
    assert e.status_code == 403, e

server.stop(timeout=1)
net.disconnect(server)
server.reload()
assert list(server.attrs["NetworkSettings"]["Networks"]) == ["bridge"], server.attrs
server.remove()
net.remove()
assert [n.name for n in client.networks.list()] == ["bridge", "host", "none"]
pruned = client.networks.prune()
assert pruned["NetworksDeleted"] in (None, []), pruned

print("docker-py networks: all passed")

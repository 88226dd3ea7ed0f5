"""docker-py 7.2's image calls against `wrun daemon` (run by
tests/all/daemon_images.rs with DOCKER_HOST set to the daemon's socket and
REGISTRY to a registry on 127.0.0.1)."""

import os
import time

import docker

client = docker.from_env()
registry = os.environ["REGISTRY"]

# list and get: by name, by id (docker-py asks `GET /images/sha256:../json`).
listed = client.images.list()
tags = sorted(t for image in listed for t in image.tags)
assert tags == ["hello:latest", "spin:latest"], tags
hello = client.images.get("hello")
assert hello.id.startswith("sha256:") and len(hello.id) == 71, hello.id
assert client.images.get(hello.id).tags == ["hello:latest"]
assert client.images.get(hello.short_id).id == hello.id

# tag, then push to the registry (docker-py returns the progress text).
remote = registry + "/py/hello"
assert hello.tag(remote, "1")
hello.reload()
assert sorted(hello.tags) == sorted(["hello:latest", remote + ":1"]), hello.tags
pushed = client.images.push(remote, tag="1")
assert "The push refers to repository [%s]" % remote in pushed, pushed
assert "1: digest: %s" % hello.id in pushed, pushed
assert "error" not in pushed, pushed
streamed = list(client.images.push(remote, tag="1", stream=True, decode=True))
assert any(line.get("aux", {}).get("Digest") == hello.id for line in streamed), streamed

# remove the name, pull it back: the same image.
client.images.remove(remote + ":1")
assert remote + ":1" not in client.images.get("hello").tags
pulled = client.images.pull(remote, tag="1")
assert pulled.id == hello.id and remote + ":1" in pulled.tags, pulled.tags
try:
    client.images.pull(registry + "/py/nothere", tag="1")
    raise AssertionError("a missing image must raise")
except docker.errors.NotFound as e:
    assert "manifest for %s/py/nothere:1 not found" % registry in str(e), e

# save, remove, load, run.
archive = b"".join(hello.save())
assert len(archive) > 1024 and b"index.json" in archive, len(archive)
removed = client.api.remove_image(hello.id, force=True)
assert {"Deleted": hello.id} in removed, removed
assert {"Untagged": "hello:latest"} in removed, removed
try:
    client.images.get("hello")
    raise AssertionError("a removed image must be gone")
except docker.errors.ImageNotFound as e:
    assert "No such image: hello" in str(e), e
loaded = client.images.load(archive)
assert [image.id for image in loaded] == [hello.id], loaded
out = client.containers.run(hello.id, remove=True)
assert b"Hello from a wrun guest!" in out, out
try:
    client.images.load(b"not an archive" * 100)
    raise AssertionError("garbage must not load")
except docker.errors.APIError as e:
    assert e.status_code == 400 and "failed to load the archive" in str(e), e

# remove: a name in use by a container is a 409, an unknown one a 404.
spin = client.containers.create("spin", name="pyspin")
try:
    client.images.remove("spin")
    raise AssertionError("an image in use must not be removed")
except docker.errors.APIError as e:
    assert e.status_code == 409, e
    assert "container %s is using its referenced image" % spin.id[:12] in str(e), e
try:
    client.images.remove("ghost")
    raise AssertionError("a missing image must raise")
except docker.errors.ImageNotFound as e:
    assert "No such image: ghost" in str(e), e

# prune: `dangling=False` removes every image no container uses (the run
# above holds its image until its removal has wound down: try again).
deleted = []
deadline = time.time() + 60
while "hello:latest" not in deleted:
    assert time.time() < deadline, deleted
    report = client.images.prune(filters={"dangling": False})
    deleted += [item.get("Untagged") for item in report["ImagesDeleted"]]
    time.sleep(0.05)
assert "spin:latest" not in deleted, deleted
spin.remove()
assert [t for image in client.images.list() for t in image.tags] == ["spin:latest"]

print("docker-py images: all passed")

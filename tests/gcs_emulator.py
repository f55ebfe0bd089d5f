"""Start gcp-storage-emulator (PyPI) with objects.moveTo added: ``python gcs_emulator.py PORT BUCKET``.

The real Cloud Storage JSON API moves an object with ``POST .../o/SRC/moveTo/o/DST``, and gcsfs
(what etils.epath uses for gs:// without TensorFlow) renames with it. gcp-storage-emulator
2026.7.19 answers 501 there, which gcsfs retries with backoff for about 30 s per rename before
it falls back to copy and delete; every atomic write is a rename, so the smoke study would take an
hour. This adds the route (a copy, then a delete of the source, as the fallback does) and starts
the emulator in memory on 127.0.0.1 only.
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator import server, settings
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def move(request, response, storage, *args, **kwargs):
    params = request.params
    try:
        dest = objects._copy(request.base_url, storage, params["bucket_name"], params["object_id"],
                             params["bucket_name"], params["dest_object_id"])
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    objects._delete(storage, params["bucket_name"], params["object_id"])
    response.json(dest)


def main(port: int, bucket: str) -> None:
    routes = []
    for prefix in (settings.API_ENDPOINT, ""):
        routes.append((rf"^{prefix}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
                       rf"(?P<dest_object_id>.*[^/]+)$", {"POST": move}))
    server.HANDLERS = (*routes, *server.HANDLERS)
    emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    emulator.run()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])

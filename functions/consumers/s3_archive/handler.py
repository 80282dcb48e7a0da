"""The S3 archive: every event on the bus, unmodified, as gzip JSON lines (archive.py has
the layout). Config (config/bus.yaml)::

    - name: archive
      code: functions/consumers/s3_archive
      batch_size: 1000
      batching_window_seconds: 30    # fuller objects, fewer PUTs
      bucket: {}                     # the stack creates it: KMS, versioning, lifecycle

``DMSBUS_BUCKET`` is set by dmsbus; ``ARCHIVE_PREFIX`` (optional) goes before ``bus=``.
The function may write objects, never delete them (its role has no delete permission).
"""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools import Logger

from consumers.s3_archive.archive import write
from consumers.s3_archive.settings import S3ArchiveSettings
from dmsbus.consumer import Received, consumer

logger = Logger(service="s3_archive")
SETTINGS = S3ArchiveSettings.from_environ(os.environ)
S3 = boto3.client("s3")


@consumer(batch=True, records=True)
def handler(batch: list[Received]) -> None:
    keys = write(S3, SETTINGS.bucket, batch, root=SETTINGS.archive_prefix)
    logger.info("archived", extra={"events": len(batch), "objects": len(keys), "keys": keys})

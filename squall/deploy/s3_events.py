"""The objects an S3 object-created notification names, in every envelope AWS delivers it in.

A Lambda function with an ``s3`` spout may be invoked:
- by S3 itself: ``{"Records": [{"eventSource": "aws:s3", "s3": {"bucket": {"name"}, "object":
  {"key", "versionId"}}}]}``, keys URL-encoded (spaces as ``+``);
- by SNS (S3 → SNS → Lambda): ``Records[i].Sns.Message`` holds that notification as JSON text;
- by SQS (S3 → SQS, or S3 → SNS → SQS): each message's ``body`` holds the notification, or (SNS
  without raw message delivery) an SNS envelope ``{"Type": "Notification", "Message": …}``;
- by EventBridge (``"source": "aws.s3"``, ``"detail-type": "Object Created"``), directly or through
  SQS: ``detail.bucket.name``, ``detail.object.key``, ``detail.object["version-id"]``.
S3's ``s3:TestEvent`` (sent when a notification is configured) names no object; events other than
object-created ones (a topic shared with ``ObjectRemoved``) name none either. S3's own
notifications (directly, through SNS or SQS) carry the key URL-encoded, a space as ``+``
(userguide/notification-content-structure.html): it is decoded. An EventBridge event carries the
key as it is (userguide/ev-events.html documents no encoding, and a rule's ``prefix`` on
``detail.object.key`` matches the raw key): it is taken as it is — decoding it would turn
``a+b.jsonl`` into ``a b.jsonl``, another (missing) object. AWS does not state this outright,
so when an EventBridge key would read otherwise decoded and S3 has no object under it as it is,
the decoded key is tried (``ObjectRef.decoded``): either way the object is read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_plus

import orjson

from squall.errors import SquallError, safe_text

log = logging.getLogger("squall.lambda")


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object version a notification names (``version_id`` None on an unversioned bucket)."""

    bucket: str
    key: str
    version_id: str | None = None
    #: The key URL-decoded, where that differs, for a key whose encoding is not documented
    #: (EventBridge): read when S3 has no object under ``key`` itself.
    decoded: str | None = None
    #: The notification's ``sequencer`` (hex, ordered per key): tells two uploads of one key apart
    #: on an unversioned bucket, where nothing else does once the object is gone.
    sequencer: str | None = None


class NotAnS3Notification(SquallError):
    """A record or message that is none of the shapes above: the message names where it is."""


def event_objects(event: dict[str, Any]) -> list[ObjectRef]:
    """The objects a Lambda event from S3, SNS or EventBridge names, every record checked before
    any object is read; a malformed record is an error naming its index."""
    return notification_objects(event, "" if "Records" in event else "the event")


def notification_objects(doc: object, where: str) -> list[ObjectRef]:
    """The objects one decoded notification names; ``where`` starts an error's message."""
    if not isinstance(doc, dict):
        raise NotAnS3Notification(f"{where}: a JSON {type(doc).__name__}, not an S3 notification")
    if isinstance(doc.get("Records"), list):
        out: list[ObjectRef] = []
        for i, record in enumerate(doc["Records"]):
            out.extend(
                _record_objects(record, f"{where}: Records[{i}]" if where else f"Records[{i}]")
            )
        return out
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return notification_objects(_json(doc["Message"], f"{where}: SNS Message"), where)
    if doc.get("source") == "aws.s3" and "detail-type" in doc:
        return _eventbridge_objects(doc, where)
    if doc.get("Event") == "s3:TestEvent":  # S3 checking the destination: nothing to read
        log.info("%s: S3 test event for bucket %s skipped", where, doc.get("Bucket"))
        return []
    keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
    raise NotAnS3Notification(f"{where}: not an S3 notification (keys: {keys})")


def _record_objects(record: object, where: str) -> list[ObjectRef]:
    if not isinstance(record, dict):
        raise NotAnS3Notification(f"{where}: a JSON {type(record).__name__}, not a record")
    sns = record.get("Sns")
    if isinstance(sns, dict):  # S3 -> SNS -> Lambda
        return notification_objects(_json(sns.get("Message"), f"{where}: Sns.Message"), where)
    s3 = record.get("s3")
    if record.get("eventSource") != "aws:s3" or not isinstance(s3, dict):
        source = record.get("eventSource") or record.get("EventSource")
        raise NotAnS3Notification(f"{where}: not an S3 event record (eventSource {source!r})")
    name = str(record.get("eventName", ""))
    if not name.startswith("ObjectCreated"):
        log.info("%s: %s skipped (only object-created events are read)", where, name)
        return []
    bucket = (s3.get("bucket") or {}).get("name")
    obj = s3.get("object") or {}
    ref = _ref(bucket, obj.get("key"), obj.get("versionId"), where, encoded=True)
    return [_with_sequencer(ref, obj.get("sequencer"))]


def _eventbridge_objects(doc: dict[str, Any], where: str) -> list[ObjectRef]:
    if doc["detail-type"] != "Object Created":
        log.info("%s: EventBridge %s skipped", where or "the event", doc["detail-type"])
        return []
    detail = doc.get("detail") or {}
    bucket = (detail.get("bucket") or {}).get("name") if isinstance(detail, dict) else None
    obj = detail.get("object") or {} if isinstance(detail, dict) else {}
    key, version = obj.get("key"), obj.get("version-id")
    ref = _ref(bucket, key, version, where or "the event", encoded=False)
    return [_with_sequencer(ref, obj.get("sequencer"))]


def _with_sequencer(ref: ObjectRef, sequencer: object) -> ObjectRef:
    if isinstance(sequencer, str) and sequencer:
        return replace(ref, sequencer=sequencer)
    return ref


def _ref(bucket: object, key: object, version: object, where: str, *, encoded: bool) -> ObjectRef:
    """``encoded``: the key is URL-encoded (S3's own notifications), not as it is (EventBridge)."""
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise NotAnS3Notification(f"{where}: an S3 event without bucket name or object key")
    decoded = None
    if encoded:  # spaces as '+', a '+' as '%2B'
        key = unquote_plus(key)
    elif unquote_plus(key) != key:
        decoded = unquote_plus(key)
    # A versioned bucket's event names the version it is about (the key's latest may be a later
    # upload, with an event of its own).
    return ObjectRef(bucket, key, version if isinstance(version, str) else None, decoded)


def _json(text: object, where: str) -> object:
    if not isinstance(text, str | bytes):
        raise NotAnS3Notification(f"{where}: not JSON text ({type(text).__name__})")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise NotAnS3Notification(f"{where}: not JSON ({safe_text(exc, 120)})") from None

"""The FastStream peer (aiokafka underneath): raw → clean → score → topics and MongoDB, one app.

Written the way a FastStream user would: a batch subscriber (``batch=True``, up to 500 records,
50 ms wait, the processor's settings) acknowledged after the handler returns
(``AckPolicy.ACK``: commit after the outputs are durable); the outputs are published without
waiting one by one (``no_confirm=True``) and confirmed together, while the documents go to
MongoDB with PyMongo's async client (``insert_many``, unordered). The per-record work is
:class:`bench.peers.work.Work`, the same as for every peer. Run by
``python -m bench.launch faststream``; the consumer group is ``processor.app_id``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from bench.peers.work import Work, duplicates_only
from streams.handlers import Incoming
from streams.mongo_writer import write_concern
from streamscore.settings import Settings


def main(settings: Settings) -> None:
    work = Work(settings)
    work.collection().database.client.close()  # indexes, as the sink creates them
    k = settings.kafka
    broker = KafkaBroker(
        k.bootstrap_servers,
        client_id=f"{k.client_id_prefix}-faststream",
        acks="all",
        enable_idempotence=True,
        linger_ms=k.linger_ms,
        max_batch_size=k.batch_size_bytes,
        compression_type=None if k.compression == "none" else k.compression,
    )
    m = settings.mongo
    client: AsyncMongoClient[Any] = AsyncMongoClient(m.url.get_secret_value(), appname="bench-faststream")
    coll = client[m.database].get_collection(m.collection, write_concern=write_concern(m.write_concern))

    @broker.subscriber(
        work.raw_topic,
        group_id=work.group,
        batch=True,
        max_records=500,
        batch_timeout_ms=50,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        ack_policy=AckPolicy.ACK,
    )
    async def handle(_bodies: list[bytes], message: KafkaMessage) -> None:
        records = message.raw_message
        records = records if isinstance(records, tuple | list) else [records]
        work.arrived([r.timestamp for r in records])
        batch = [
            Incoming(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or [])) for r in records
        ]
        pending: list[Any] = []

        def emit(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
            hdrs = {h: v.decode("utf-8", "replace") for h, v in headers} if headers else None
            pending.append(broker.publish(value, topic, key=key, headers=hdrs, no_confirm=True))

        docs, result = work.process(batch, emit)
        futures = await asyncio.gather(*pending)
        if docs:
            work.stamp(docs)
            try:
                await coll.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                if not duplicates_only(exc.details):
                    raise
        await asyncio.gather(*futures)
        work.stored(docs, result)

    asyncio.run(FastStream(broker).run())

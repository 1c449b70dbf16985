"""Generate the checked-in JSON Schemas and AsyncAPI document from the pydantic models.

python -m contracts.generate          # write contracts/schemas/*.json and contracts/asyncapi.yaml
python -m contracts.generate --check  # exit 1 if the checked-in files differ from the models
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from contracts.registry import ENVELOPE_BY_TYPE, MODEL_BY_TYPE
from contracts.topics import ALL, DEAD_LETTER_PARTITIONS

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
ASYNCAPI = HERE / "asyncapi.yaml"


def schema_documents() -> dict[str, str]:
    documents = {}
    for event_type, envelope in sorted(ENVELOPE_BY_TYPE.items()):
        schema = envelope.model_json_schema()
        schema["$id"] = f"https://arrears.dev/schemas/{event_type}.json"
        schema["title"] = event_type
        schema["properties"]["type"] = {"const": event_type, "type": "string", "title": "Type"}
        documents[f"{event_type}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def _message_name(event_type: str) -> str:
    return event_type.replace(".", "_")


def asyncapi_document() -> str:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in ALL:
        types = sorted(t for t, m in MODEL_BY_TYPE.items() if topic.name == m.TOPIC)
        for event_type in types:
            messages[_message_name(event_type)] = {
                "name": event_type,
                "contentType": "application/json",
                "payload": {"$ref": f"./schemas/{event_type}.json"},
            }
        channel_id = topic.name.replace(".", "_")
        channels[channel_id] = {
            "address": topic.name,
            "description": topic.description,
            "bindings": {
                "kafka": {
                    "partitions": topic.partitions,
                    "replicas": 1,
                    "topicConfiguration": {"retention.ms": topic.retention_ms},
                }
            },
            "messages": {
                _message_name(t): {"$ref": f"#/components/messages/{_message_name(t)}"} for t in types
            },
        }
        channels[channel_id + "_dlq"] = {
            "address": topic.dead_letter,
            "description": f"Records of {topic.name} that could not be applied; headers dlq.reason, "
            "dlq.topic, dlq.partition, dlq.offset, dlq.group. The value is the original record.",
            "bindings": {"kafka": {"partitions": DEAD_LETTER_PARTITIONS, "replicas": 1}},
        }
        if types:
            operations[f"publish_{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
            }
    document = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Arrears topics",
            "version": "1.0.0",
            "description": "Every Arrears event travels in one CloudEvents 1.0 envelope, keyed "
            '"{tenant_id}:{debtor_id}" (the clock: "{tenant_id}").',
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True)


def expected_files() -> dict[Path, str]:
    files = {SCHEMAS / name: text for name, text in schema_documents().items()}
    files[ASYNCAPI] = asyncapi_document()
    return files


def drift() -> list[str]:
    """Files that are missing, stale, or no longer generated."""
    expected = expected_files()
    problems = [
        str(p.relative_to(HERE)) for p, text in expected.items() if not p.is_file() or p.read_text() != text
    ]
    extra = set(SCHEMAS.glob("*.json")) - set(expected)
    return problems + [f"{p.relative_to(HERE)} (no longer generated)" for p in sorted(extra)]


def write() -> None:
    SCHEMAS.mkdir(exist_ok=True)
    for stale in set(SCHEMAS.glob("*.json")) - set(expected_files()):
        stale.unlink()
    for path, text in expected_files().items():
        path.write_text(text)


if __name__ == "__main__":
    if "--check" in sys.argv:
        stale = drift()
        if stale:
            sys.exit(
                "contracts drifted from the models; run python -m contracts.generate:\n  "
                + "\n  ".join(stale)
            )
    else:
        write()

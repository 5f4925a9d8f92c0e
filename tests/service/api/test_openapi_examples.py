"""Every operation of the OpenAPI document has a summary, a description and an example, and
every example is valid against the schema it sits next to (issue 21: /docs a new user can
read without sending a request).

The examples are real answers of the shipped models (service/api/examples.py); a schema that
changes under them (a field renamed, a type narrowed) fails here rather than in a reader's
generated client. ``$ref``s resolve against the document's own components.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from service.api.main import create_app
from service.settings import Settings

DOC = "urn:specula:openapi"


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    """The schema as served, built in-process (the routes are declared without a model)."""
    repo = tmp_path_factory.mktemp("no-models")
    return create_app(Settings(model_repository=str(repo))).openapi()


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, ops in schema["paths"].items()
            for method, op in ops.items()]


def pointer(*parts: str) -> str:
    """A JSON pointer to ``parts``, escaped for a URI fragment."""
    return "".join("/" + quote(p.replace("~", "~0").replace("/", "~1"), safe="")
                   for p in parts)


def media_examples(content: dict[str, dict]) -> Iterator[tuple[str, str, Any]]:
    """(media type, example name, value) of every example of a content map."""
    for media, obj in content.items():
        if "example" in obj:
            yield media, "example", obj["example"]
        for name, ex in obj.get("examples", {}).items():
            yield media, name, ex["value"]


def examples_of(path: str, method: str, op: dict) -> Iterator[tuple[tuple[str, ...], str, Any]]:
    """(pointer parts of the schema it belongs to, example name, value) of every example of
    the operation: its request body's and every response's."""
    base = ("paths", path, method)
    for media, name, value in media_examples(op.get("requestBody", {}).get("content", {})):
        yield (*base, "requestBody", "content", media, "schema"), name, value
    for status, response in op["responses"].items():
        for media, name, value in media_examples(response.get("content", {})):
            yield (*base, "responses", status, "content", media, "schema"), name, value


def test_every_operation_has_a_summary_a_description_and_an_example(schema):
    ops = operations(schema)
    assert len(ops) >= 23
    missing = []
    for path, method, op in ops:
        own = [parts for parts, _, _ in examples_of(path, method, op)
               if parts[3] == "requestBody" or parts[4].startswith("2")]
        if not (op.get("summary") and op.get("description") and own):
            missing.append(op["operationId"])
    assert not missing, missing


def test_every_error_response_has_an_example(schema):
    """One error body per declared status, so a reader sees the shape and a real message."""
    missing = [(op["operationId"], status) for _, _, op in operations(schema)
               for status, r in op["responses"].items() if int(status) >= 400
               and not list(media_examples(r.get("content", {})))]
    assert not missing, missing


def test_every_example_is_valid_against_its_schema(schema):
    registry = Registry().with_resource(
        DOC, Resource.from_contents(schema, default_specification=DRAFT202012))
    checked, failures = 0, []
    for path, method, op in operations(schema):
        for parts, name, value in examples_of(path, method, op):
            validator = Draft202012Validator({"$ref": DOC + "#" + pointer(*parts)},
                                             registry=registry)
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            failures += [(op["operationId"], parts[3:], name, list(e.path), e.message[:200])
                         for e in errors]
            checked += 1
    assert not failures, failures
    assert checked >= 23 + 23  # an answer of each operation and an error of each at least


def test_a_wrong_example_is_caught(schema):
    """The check itself: a classify answer with a probability as a string is refused."""
    registry = Registry().with_resource(
        DOC, Resource.from_contents(schema, default_specification=DRAFT202012))
    ref = pointer("paths", "/v1/spectra:classify", "post", "responses", "200", "content",
                  "application/json", "schema")
    validator = Draft202012Validator({"$ref": DOC + "#" + ref}, registry=registry)
    op = schema["paths"]["/v1/spectra:classify"]["post"]
    good = op["responses"]["200"]["content"]["application/json"]["examples"]["one_file"]
    assert validator.is_valid(good["value"])
    bad = {**good["value"], "results": [{**good["value"]["results"][0], "entropy": "0.77"}]}
    assert not validator.is_valid(bad)

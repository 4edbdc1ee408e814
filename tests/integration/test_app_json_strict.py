"""Strict JSON in the app, against a real redis-server: overflowing numbers never get in or out."""

import json

import pytest

from app import create_app
from app.errors import NotJSON, strict_loads


@pytest.fixture
def client(redis_server):
    return create_app({"TESTING": True, "REDIS_URL": redis_server.url}).test_client()


@pytest.mark.parametrize("body", [b'{"a": 1e400}', b'{"a": -1e400}', b'{"a": 1E309}', b'{"a": [0, {"b": 1e999}]}',
                                  b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'])
def test_a_number_json_cannot_carry_is_a_400_and_nothing_is_stored(client, redis_client, body):
    response = client.put("/session/s1", data=body, content_type="application/json")
    assert response.status_code == 400 and response.is_json, response.get_data(as_text=True)
    assert "out of range" in response.get_json()["error"] or "is not valid JSON" in response.get_json()["error"]
    assert redis_client.get("session:s1") is None
    assert client.get("/session/s1").status_code == 404


def test_large_finite_numbers_round_trip_exactly(client):
    body = {"big": 1.7976931348623157e308, "tiny": 5e-324, "int": 10 ** 40}
    assert client.put("/session/s2", json=body).status_code == 201
    assert client.get("/session/s2").get_json() == {"session": body}


def test_a_stored_non_json_value_is_never_echoed(client, redis_client):
    redis_client.set("session:old", '{"a":Infinity}')  # stored before JSON was strict
    response = client.get("/session/old")
    assert response.status_code == 500 and response.is_json
    assert b"Infinity" not in response.get_data()


def test_the_app_encoder_and_decoder_refuse_what_is_not_json(client):
    provider = client.application.json
    with pytest.raises(ValueError):
        provider.dumps({"a": float("inf")})
    with pytest.raises(ValueError):
        provider.loads('{"a": 1e400}')
    with pytest.raises(NotJSON):
        strict_loads("[NaN]")
    assert json.loads(provider.dumps({"a": 1.5})) == {"a": 1.5}

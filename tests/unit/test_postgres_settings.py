"""The size of the buffer cache Arrears gives its own PostgreSQL."""

from services.runtime.embedded_postgres import server_settings


def test_the_buffer_cache_is_a_quarter_of_memory_within_bounds() -> None:
    assert server_settings(24 * 2**30)["shared_buffers"] == "4096MB"
    assert server_settings(8 * 2**30)["shared_buffers"] == "2048MB"
    assert server_settings(256 * 2**20)["shared_buffers"] == "128MB"

"""The moto patches: each fits the pinned moto, goes in once, and comes out again."""

from __future__ import annotations

import pytest
from moto.dynamodb.responses import DynamoHandler

from local.moto_patches import Patch, PatchError, applied, apply, check, is_applied, undo
from local.moto_server import ENCODE_BATCH_WRITES, PATCHES, QUEUE_INVOCATIONS_CALLS


@pytest.mark.parametrize("patch", PATCHES, ids=lambda patch: patch.name)
def test_every_patch_fits_the_pinned_moto(patch: Patch) -> None:
    # A moto that renamed the attribute, or changed its parameters, fails here (and the
    # server refuses to start) instead of running unpatched
    assert check(patch) is not None
    assert not is_applied(patch)  # nothing in the test process runs on a patched moto


@pytest.mark.parametrize("used", QUEUE_INVOCATIONS_CALLS, ids=lambda used: used.name)
def test_what_the_invocation_queue_calls_in_moto_fits_the_pinned_moto(used: Patch) -> None:
    # The queued invocations wait on moto's SQS backend and queues: a moto whose methods
    # changed fails here (and the server refuses to start) instead of failing mid-request
    assert check(used) is not None


def test_a_patch_of_an_attribute_moto_no_longer_has_is_refused_naming_it() -> None:
    gone = Patch(
        "moto.dynamodb.responses.DynamoHandler", "batch_write_items", ("self",), lambda original: original
    )
    with pytest.raises(PatchError, match=r"DynamoHandler\.batch_write_items: moto has no such attribute"):
        apply(gone)


def test_a_patch_of_an_attribute_whose_parameters_changed_is_refused_naming_both() -> None:
    changed = Patch("moto.kinesis.models.Shard", "get_records", ("self", "limit"), lambda original: original)
    with pytest.raises(
        PatchError, match=r"Shard.get_records: moto's takes \(self, last_sequence_id, limit\)"
    ):
        apply(changed)


def test_applying_twice_is_applying_once_and_undo_puts_moto_back() -> None:
    original = DynamoHandler.batch_write_item
    try:
        # When the patch is applied twice
        apply(ENCODE_BATCH_WRITES)
        once = DynamoHandler.batch_write_item
        apply(ENCODE_BATCH_WRITES)
        # Then the second changed nothing (no replacement wrapped in itself)
        assert DynamoHandler.batch_write_item is once is not original
    finally:
        undo(ENCODE_BATCH_WRITES)
    # And undoing it puts moto's own back
    assert DynamoHandler.batch_write_item is original
    assert not is_applied(ENCODE_BATCH_WRITES)


def test_applied_undoes_its_patches_even_when_the_block_fails() -> None:
    original = DynamoHandler.batch_write_item
    with pytest.raises(RuntimeError), applied([ENCODE_BATCH_WRITES]):
        assert DynamoHandler.batch_write_item is not original
        raise RuntimeError("the block fails")
    assert DynamoHandler.batch_write_item is original

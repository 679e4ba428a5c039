"""Two gloo ranks holding different data optimise the same objective: identical V̂ and λ on both
ranks, equal to one process holding all the data (micro-batch k of the single process = the
union of the ranks' micro-batches k)."""

import pytest
import torch
import torch.multiprocessing as mp

from r2vpo_mini_engine import dp_rank_main, dp_run


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    """One spawn of 2 gloo ranks; each trains with the optimiser hook and with the auto step."""
    assert not torch.distributed.is_initialized()
    folder = tmp_path_factory.mktemp("r2vpo_dp")
    mp.spawn(dp_rank_main, args=(2, str(folder / "init"), str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank{r}.pt") for r in range(2)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("hooked", [True, False], ids=["optimizer-hook", "auto-step"])
def test_two_ranks_match_each_other_and_a_single_process(two_rank_results, hooked):
    ranks = [result[hooked] for result in two_rank_results]
    single = dp_run(None, 1, hooked)

    # Identical on both ranks (V̂ is all-reduced, λ broadcast): exact equality.
    assert ranks[0]["lambda"] == ranks[1]["lambda"]
    assert ranks[0]["v_hat"] == ranks[1]["v_hat"]
    assert ranks[0]["micro_v_hat"] == ranks[1]["micro_v_hat"]
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # And the same as one process with all the data (up to summation order).
    assert ranks[0]["lambda"] == pytest.approx(single["lambda"], rel=1e-9)
    assert ranks[0]["v_hat"] == pytest.approx(single["v_hat"], rel=1e-9)
    for got, want in zip(ranks[0]["micro_v_hat"], single["micro_v_hat"]):
        assert got == pytest.approx(want, rel=1e-9)
    for a, b in zip(ranks[0]["params"], single["params"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert single["lambda"][-1] > 0  # the run actually exercised the dual step

"""A real TRL GRPOTrainer runs two steps on CPU with a zyn reward (tiny random models)."""
import pytest

pytest.importorskip("trl")

from conftest import make_tiny_causal  # noqa: E402

from zyn import ZeroShotRewardModel  # noqa: E402


def _train(tmp_path, dataset, judge):
    from trl import GRPOConfig, GRPOTrainer

    policy, tok = make_tiny_causal()
    reward = ZeroShotRewardModel(*judge, prompt="sentiment").as_trl_reward()
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, learning_rate=1e-4, logging_steps=1, report_to="none",
                      use_cpu=True, bf16=False, save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=args, train_dataset=dataset,
                          processing_class=tok)
    trainer.train()
    return trainer.state.log_history


@pytest.mark.parametrize("conversational", [False, True])
def test_grpo_two_steps(tmp_path, tiny_causal, conversational):
    from datasets import Dataset

    openers = ["This film was", "I walked out of", "The director's latest", "Two hours of"]
    rows = ([{"prompt": [{"role": "user", "content": f"Continue: {o}"}]} for o in openers] if conversational
            else [{"prompt": o} for o in openers])
    history = _train(tmp_path, Dataset.from_list(rows * 2), tiny_causal)
    logged = [h for h in history if "rewards/zyn_sentiment/mean" in h]
    assert len(logged) == 2
    # the zyn reward is (p - 0.5) * 10, so it lies in [-5, 5]
    assert all(-5.0 <= h["rewards/zyn_sentiment/mean"] <= 5.0 for h in logged)

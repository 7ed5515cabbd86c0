"""trainer/worker/hf_compat.py: the checkpointing switch under the name the installed transformers knows."""

from trainer.worker.hf_compat import checkpointing_kwargs


def test_older_transformers_get_the_old_name():
    """transformers 5.17 (an H200 image's) has no `activation_checkpointing` field."""
    old = {"output_dir", "gradient_checkpointing", "gradient_checkpointing_kwargs"}
    assert checkpointing_kwargs(True, old) == {"gradient_checkpointing": True,
                                               "gradient_checkpointing_kwargs": {"use_reentrant": False}}
    new = old | {"activation_checkpointing", "activation_checkpointing_kwargs"}
    assert checkpointing_kwargs(False, new) == {"activation_checkpointing": False,
                                                "activation_checkpointing_kwargs": None}


def test_the_installed_sft_config_takes_them(tmp_path):
    from trl import SFTConfig

    on = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                   **checkpointing_kwargs(True))
    off = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                    **checkpointing_kwargs(False))
    assert getattr(on, "activation_checkpointing", None) or on.gradient_checkpointing
    assert not (getattr(off, "activation_checkpointing", None) or off.gradient_checkpointing)

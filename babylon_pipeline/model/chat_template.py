"""The ChatML template of Qwen2-style models, with `{% generation %}` markers around assistant turns.

The markers are what `apply_chat_template(..., return_assistant_tokens_mask=True)` needs to tell
trainable tokens from context; hub templates lack them, which is why TRL ships training variants.
A completion is sampled after `<|im_start|>assistant\\n` and ends with `<|im_end|>`, so the tokens
of a recorded completion line up with the assistant span this template renders.
"""

from __future__ import annotations

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def has_generation_markers(template: str | None) -> bool:
    """Whether a chat template can produce assistant masks (the production base is checked with it)."""
    return bool(template) and "{% generation %}" in template.replace("{%-", "{%").replace("-%}", "%}")

"""Each built-in template's exact output, single- and multi-turn, and its error paths."""

from __future__ import annotations

import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.data.templates import TEMPLATE_REGISTRY, PromptTemplate, TemplateRegistry

SINGLE = {"instruction": "Add 2 and 3.", "output": "5"}
SINGLE_INPUT = {"instruction": "Summarise.", "input": "Ray scales Python.", "output": "Ray scales."}
SINGLE_SYSTEM = {"system": "Be brief.", "instruction": "Hi", "output": "Hello"}
MULTI = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6"},
    ]
}

EXPECTED = {
    ("alpaca", "single"): (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n5"
    ),
    ("alpaca", "input"): (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
        "Summarise.\n\n### Input:\nRay scales Python.\n\n### Response:\nRay scales."
    ),
    ("alpaca", "system"): "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello",
    ("alpaca", "multi"): (
        "You are terse.\n\n### Instruction:\n2+2?\n\n### Response:\n4\n\n### Instruction:\n3+3?"
        "\n\n### Response:\n6"
    ),
    ("chatml", "single"): "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n",
    ("chatml", "input"): (
        "<|im_start|>user\nSummarise.\n\nRay scales Python.<|im_end|>\n"
        "<|im_start|>assistant\nRay scales.<|im_end|>\n"
    ),
    ("chatml", "system"): (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n"
    ),
    ("chatml", "multi"): (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n"
        "<|im_start|>assistant\n6<|im_end|>\n"
    ),
    ("llama3", "single"): (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nAdd 2 and 3.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>"
    ),
    ("llama3", "input"): (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSummarise.\n\nRay scales Python."
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nRay scales.<|eot_id|>"
    ),
    ("llama3", "system"): (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
    ),
    ("llama3", "multi"): (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n3+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n6<|eot_id|>"
    ),
    ("mistral", "single"): "<s>[INST] Add 2 and 3. [/INST]5</s>",
    ("mistral", "input"): "<s>[INST] Summarise.\n\nRay scales Python. [/INST]Ray scales.</s>",
    ("mistral", "system"): "<s>[INST] Be brief.\n\nHi [/INST]Hello</s>",
    ("mistral", "multi"): "<s>[INST] You are terse.\n\n2+2? [/INST]4</s>[INST] 3+3? [/INST]6</s>",
    ("phi3", "single"): "<|user|>\nAdd 2 and 3.<|end|>\n<|assistant|>\n5<|end|>\n<|endoftext|>",
    ("phi3", "input"): (
        "<|user|>\nSummarise.\n\nRay scales Python.<|end|>\n<|assistant|>\nRay scales.<|end|>\n<|endoftext|>"
    ),
    ("phi3", "system"): (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|endoftext|>"
    ),
    ("phi3", "multi"): (
        "<|system|>\nYou are terse.<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n4<|end|>\n"
        "<|user|>\n3+3?<|end|>\n<|assistant|>\n6<|end|>\n<|endoftext|>"
    ),
    ("raw_completion", "single"): "Add 2 and 3.\n5",
    ("raw_completion", "input"): "Summarise.\n\nRay scales Python.\nRay scales.",
    ("raw_completion", "system"): "Be brief.\nHi\nHello",
    ("raw_completion", "multi"): "You are terse.\n2+2?\n4\n3+3?\n6",
}
RECORDS = {"single": SINGLE, "input": SINGLE_INPUT, "system": SINGLE_SYSTEM, "multi": MULTI}


def test_builtins_are_registered():
    assert TEMPLATE_REGISTRY.list_names() == ["alpaca", "chatml", "llama3", "mistral", "phi3", "raw_completion"]


@pytest.mark.parametrize(("name", "shape"), sorted(EXPECTED))
def test_exact_output(name, shape):
    assert TEMPLATE_REGISTRY.format(name, RECORDS[shape]) == EXPECTED[(name, shape)]


@pytest.mark.parametrize(("name", "shape"), sorted(EXPECTED))
def test_split_is_prompt_plus_completion(name, shape):
    template = TEMPLATE_REGISTRY.get(name)
    prompt, completion = template.split(RECORDS[shape])
    assert prompt + completion == EXPECTED[(name, shape)]
    answer = RECORDS[shape].get("output") or RECORDS[shape].get("messages", [{}])[-1].get("content")
    assert completion.startswith(answer)
    assert template.format_prompt(RECORDS[shape]) == prompt


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpaca", "Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n"),
        ("chatml", "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n"),
        ("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nAdd 2 and 3.<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        ("mistral", "<s>[INST] Add 2 and 3. [/INST]"),
        ("phi3", "<|user|>\nAdd 2 and 3.<|end|>\n<|assistant|>\n"),
        ("raw_completion", "Add 2 and 3.\n"),
    ],
)
def test_record_without_answer_is_a_generation_prompt(name, expected):
    assert TEMPLATE_REGISTRY.format(name, {"instruction": "Add 2 and 3."}) == expected


def test_llama3_trims_content_like_meta():
    record = {"instruction": "  Hi  \n", "output": " Hello "}
    assert "\n\nHi<|eot_id|>" in TEMPLATE_REGISTRY.format("llama3", record)
    assert "\n\nHello<|eot_id|>" in TEMPLATE_REGISTRY.format("llama3", record)


def test_prompt_completion_and_text_records():
    assert TEMPLATE_REGISTRY.format("chatml", {"prompt": "p", "completion": "c"}) == (
        "<|im_start|>user\np<|im_end|>\n<|im_start|>assistant\nc<|im_end|>\n"
    )
    assert TEMPLATE_REGISTRY.format("raw_completion", {"text": "free text"}) == "free text"
    with pytest.raises(DataError, match="fits only raw_completion"):
        TEMPLATE_REGISTRY.format("chatml", {"text": "free text"})


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"question": "q", "answer": "a"}, "no field a template can read; expected 'messages', 'instruction'"),
        ({"instruction": 5}, "field 'instruction' must be a string"),
        ({"instruction": "x", "input": ["a"]}, "field 'input' must be a string"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user"}]}, "messages[0]: each message needs 'role' and 'content'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
         "messages[1]: expected a assistant message"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
         "a system message may only come first"),
        ({"messages": [{"role": "system", "content": "s"}]}, "has no user message"),
        ({"messages": [{"role": "user", "content": 3}]}, "'content' must be a string"),
    ],
)
def test_bad_records_get_clear_errors(record, fragment):
    with pytest.raises(DataError) as info:
        TEMPLATE_REGISTRY.format("chatml", record)
    assert fragment in str(info.value)


def test_registry_register_get_and_errors():
    registry = TemplateRegistry()

    class Upper(PromptTemplate):
        name = "upper"

        def render(self, conv, add_generation_prompt):
            return " ".join(c.upper() for _, c in conv.turns)

    registry.register("upper", Upper())
    assert registry.list_names() == ["upper"] and "upper" in registry
    assert registry.format("upper", {"instruction": "a", "output": "b"}) == "A B"
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("upper", Upper())
    registry.register("upper", Upper(), overwrite=True)
    with pytest.raises(ConfigError, match="unknown template 'nope'; available: upper"):
        registry.format("nope", {})
    with pytest.raises(ConfigError, match="must be a PromptTemplate"):
        registry.register("bad", object())

"""The in-process Qwen-VL as a LangChain chat model that calls tools (the ``vlm`` planner's model, in-process).

The tools go to the processor's chat template (``apply_chat_template(..., tools=...)``), which lists them in the
system turn and tells the model to answer ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; greedy
generation's reply is parsed back into LangChain ``tool_calls`` (and ``invalid_tool_calls`` for what does not
parse, with the reason). Earlier turns render through the same template: the assistant's calls as
``<tool_call>`` blocks, tool messages as ``<tool_response>``. It generates with the weights the ``qwen`` reasoner
loaded (``QwenBackend.loaded``); images arrive as data URLs in the messages (as the OpenAI protocol sends them).
"""

from __future__ import annotations

import base64
import functools
import io
import itertools
import json
import re
import threading
from typing import Any, Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.tool import ToolCall, invalid_tool_call, tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from PIL import Image
from pydantic import ConfigDict, PrivateAttr

from agent.core.errors import ConfigError

TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')
SHAPE = 'expected {"name": <tool name>, "arguments": {...}}'


def parse_tool_calls(text: str, ids: Any = None) -> tuple[str, list[ToolCall], list[dict[str, Any]]]:
    """``(content, tool_calls, invalid_tool_calls)`` of a Qwen reply: each ``<tool_call>`` block's JSON becomes a
    call; one that is not JSON, has the wrong shape or is cut off (no ``</tool_call>``) becomes an invalid call
    whose ``error`` says why. ``content``: the text outside the blocks. ``ids``: an iterator of call ids."""
    ids = ids or (f"call_{i}" for i in itertools.count())
    calls: list[ToolCall] = []
    bad: list[dict[str, Any]] = []
    for m in TOOL_CALL.finditer(text):
        raw, cid = m.group(1).strip(), next(ids)
        cut = "" if m.group(0).endswith("</tool_call>") else " (cut off: no </tool_call>)"
        named = NAME.search(raw)
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad.append(invalid_tool_call(name=named.group(1) if named else None, args=raw, id=cid,
                                         error=f"not JSON: {exc.msg} at character {exc.pos}{cut}; {SHAPE}"))
            continue
        args = obj.get("arguments", {}) if isinstance(obj, dict) else None
        if isinstance(args, str):  # some models send the arguments as a JSON string, as the OpenAI protocol does
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        name = obj.get("name") if isinstance(obj, dict) else None
        if not isinstance(name, str) or not name or not isinstance(args, dict):
            bad.append(invalid_tool_call(name=name if isinstance(name, str) else None, args=raw, id=cid,
                                         error=f"{SHAPE}, found {raw[:200]}{cut}"))
            continue
        calls.append(tool_call(name=name, args=args, id=cid))
    return TOOL_CALL.sub("", text).strip(), calls, bad


@functools.lru_cache(maxsize=4)  # the history is rendered again every model turn: the photo is decoded once
def decode_data_url(url: str) -> Image.Image:
    """A ``data:image/...;base64,`` URL's picture (RGB, shared: not to be modified); anything else is a
    ``ValueError``."""
    head, _, data = url.partition(",")
    if not (head.startswith("data:image/") and head.endswith(";base64")):
        raise ValueError(f"expected a base64 data:image URL, found {url[:40]!r}")
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def to_chat(messages: Sequence[BaseMessage]) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """LangChain messages as the chat template's messages, and the pictures in the order they appear."""
    chat: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for m in messages:
        if isinstance(m, (HumanMessage, SystemMessage)):
            role = "user" if isinstance(m, HumanMessage) else "system"
            if isinstance(m.content, str):
                chat.append({"role": role, "content": m.content})
                continue
            parts = []
            for block in m.content:
                block = {"type": "text", "text": block} if isinstance(block, str) else block
                if block.get("type") == "image_url":
                    url = block["image_url"]["url"] if isinstance(block["image_url"], dict) else block["image_url"]
                    images.append(decode_data_url(url))
                    parts.append({"type": "image"})
                elif block.get("type") == "text":
                    parts.append({"type": "text", "text": block["text"]})
            chat.append({"role": role, "content": parts})
        elif isinstance(m, AIMessage):
            calls = [{"type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
                     for c in m.tool_calls]
            calls += [{"type": "function", "function": {"name": c.get("name") or "", "arguments": c.get("args") or ""}}
                      for c in m.invalid_tool_calls]  # shown as the model wrote them
            chat.append({"role": "assistant", "content": m.text, **({"tool_calls": calls} if calls else {})})
        elif isinstance(m, ToolMessage):
            chat.append({"role": "tool", "content": m.text})
        else:
            raise ValueError(f"expected system, human, AI or tool messages, found {type(m).__name__}")
    return chat, images


class QwenChatModel(BaseChatModel):
    """A tool-calling chat model over a ``QwenBackend``'s weights (greedy, ``max_new_tokens`` per turn)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any  # agent.reasoners.qwen.QwenBackend
    max_new_tokens: int = 256
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)  # one generation at a time
    _ids: Any = PrivateAttr(default_factory=itertools.count)

    @property
    def _llm_type(self) -> str:
        return "qwen-transformers"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """The model with ``tools`` (LangChain tools, or OpenAI tool dicts) passed to every generation."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def check_template(self) -> None:
        """Raise ``ConfigError`` when the checkpoint's chat template does not show tools to the model."""
        _, processor = self.backend.loaded
        probe = {"type": "function", "function": {"name": "probe_tool_xyz", "description": "d",
                                                  "parameters": {"type": "object", "properties": {}}}}
        text = processor.apply_chat_template([{"role": "user", "content": "hi"}], tools=[probe], tokenize=False,
                                             add_generation_prompt=True)
        if "probe_tool_xyz" not in text:
            raise ConfigError(f"the chat template of {self.backend.model!r} does not render tools, so the model "
                              "cannot call them (--planner vlm); use a checkpoint whose template has tool calling "
                              "(Qwen3-VL), or serve it with a tool-call parser and use --backend openai")

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  tools: list[dict[str, Any]] | None = None, **kwargs: Any) -> ChatResult:
        import torch

        chat, images = to_chat(messages)
        model, processor = self.backend.loaded
        text = processor.apply_chat_template(chat, tools=tools or None, tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[text], return_tensors="pt", **self.backend.image_kwargs(images)).to(model.device)
        tokenizer = processor.tokenizer
        with self._lock, torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
        raw = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        content, calls, bad = parse_tool_calls(raw, (f"call_{next(self._ids)}" for _ in itertools.count()))
        message = AIMessage(content=content, tool_calls=calls, invalid_tool_calls=bad,
                            response_metadata={"raw": raw, "prompt_tokens": int(inputs["input_ids"].shape[1])})
        return ChatResult(generations=[ChatGeneration(message=message)])

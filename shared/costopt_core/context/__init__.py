"""Fewer input tokens per call: relevance filtering, context summarization, prompt layout.

Pure functions over plain data (chunk texts and the scores the store already
returned); the LangChain and LlamaIndex adapters only translate documents and
nodes to and from them.
"""

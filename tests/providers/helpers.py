"""Shared data and HTTP helpers for the provider tests."""
from __future__ import annotations

import aiohttp

TEXT = (
    "Machine learning is a field of artificial intelligence that uses statistical techniques to give "
    "computer systems the ability to learn from data. The name machine learning was coined in 1959 by "
    "Arthur Samuel. Machine learning algorithms build a model based on sample data, known as training data, "
    "in order to make predictions or decisions without being explicitly programmed to do so. These "
    "algorithms are used in a wide variety of applications, such as email filtering and computer vision, "
    "where it is difficult or infeasible to develop conventional algorithms.\n\n"
    "Deep learning is a subset of machine learning based on artificial neural networks. However, deep "
    "learning models require large amounts of training data and significant computing power. Google and "
    "Microsoft have invested heavily in deep learning research. Critics argue that these models are hard "
    "to interpret. Nevertheless, the field continues to grow rapidly, and new applications appear every year."
)


async def control(up_url: str, **changes) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{up_url}/_control", json=changes) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def get_json(url: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return await r.json()


async def reset(up_url: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{up_url}/_reset") as r:
            return await r.json()

"""Runs the shop against a live `stockguard serve` on SQLite: N shoppers race to check out
M < N units of one product, and exactly M succeed. Then the stock is 0 and the audit is clean.

The stockguard binary comes from $STOCKGUARD_BIN (default: target/debug/stockguard from the
repository root).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from app import Product, create_app

REPO = Path(__file__).resolve().parents[2]
SHOPPERS = 40
UNITS = 13


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stockguard():
    binary = os.environ.get("STOCKGUARD_BIN", str(REPO / "target" / "debug" / "stockguard"))
    if not Path(binary).exists():
        pytest.fail(f"no stockguard binary at {binary}: cargo build -p stockguard-api, or set STOCKGUARD_BIN")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [binary, "serve", "--database-url", f"sqlite://{tmp}/shop.db", "--bind", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"stockguard did not become ready: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        try:
            yield url, binary, f"sqlite://{tmp}/shop.db"
        finally:
            server.terminate()
            server.wait(timeout=10)


async def race(url: str) -> list[httpx.Response]:
    products = [Product("tee-red-m", "Red tee, M", 1900), Product("mug", "Mug", 900)]
    app = create_app(url, products)
    async with httpx.AsyncClient(base_url=url) as admin:
        for sku, units in [("tee-red-m", UNITS), ("mug", 10 * SHOPPERS)]:
            created = await admin.post("/v1/skus", json={"sku": sku, "initial_stock": units})
            assert created.status_code == 201, created.text
    shop = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")

    async def shopper(n: int) -> httpx.Response:
        cart = (await shop.post("/carts")).json()["id"]
        # The tee added twice: one unit each time, two lines that stockguard sums.
        if n % 2 == 0:
            await shop.post(f"/carts/{cart}/items", json={"sku": "tee-red-m", "quantity": 1})
            await shop.post(f"/carts/{cart}/items", json={"sku": "mug", "quantity": 2})
        else:
            await shop.post(f"/carts/{cart}/items", json={"sku": "mug", "quantity": 1})
            await shop.post(f"/carts/{cart}/items", json={"sku": "tee-red-m", "quantity": 1})
        return await shop.post(f"/carts/{cart}/checkout")

    try:
        return await asyncio.gather(*(shopper(n) for n in range(SHOPPERS)))
    finally:
        await shop.aclose()
        await app.state.stockguard.aclose()


def test_exactly_the_units_on_hand_are_sold(stockguard):
    url, binary, database = stockguard
    answers = asyncio.run(race(url))
    placed = [a for a in answers if a.status_code == 200]
    sold_out = [a for a in answers if a.status_code == 409]
    assert len(placed) == UNITS, [a.text for a in answers if a.status_code not in (200, 409)]
    assert len(placed) + len(sold_out) == SHOPPERS
    for answer in sold_out:
        lines = answer.json()["detail"]["lines"]
        assert [line["sku"] for line in lines] == ["tee-red-m"], lines
    tee = httpx.get(f"{url}/v1/skus/tee-red-m").json()
    mug = httpx.get(f"{url}/v1/skus/mug").json()
    assert tee["stock"] == 0
    mugs_sold = sum(line["quantity"] for a in placed for line in a.json()["receipt"]["lines"] if line["sku"] == "mug")
    assert mug["stock"] == 10 * SHOPPERS - mugs_sold, "a refused order took no mugs"
    audit = httpx.get(f"{url}/v1/audit").json()
    assert audit["clean"] and audit["orders_checked"] == UNITS, audit
    # The CLI audit agrees, reading the same file.
    cli = subprocess.run([binary, "audit", "--database-url", database], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_a_repeated_checkout_is_not_sold_twice(stockguard):
    url, _, _ = stockguard

    async def run():
        app = create_app(url, [Product("lamp", "Lamp", 4900)])
        async with httpx.AsyncClient(base_url=url) as admin:
            assert (await admin.post("/v1/skus", json={"sku": "lamp", "initial_stock": 5})).status_code == 201
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop") as shop:
            cart = (await shop.post("/carts")).json()["id"]
            await shop.post(f"/carts/{cart}/items", json={"sku": "lamp", "quantity": 2})
            first = await shop.post(f"/carts/{cart}/checkout")
            # As if the first answer had been lost: the same order id is placed again.
            again = await app.state.stockguard.post(
                "/v1/orders", json={"order_id": cart, "lines": [{"sku": "lamp", "quantity": 2}]}
            )
        await app.state.stockguard.aclose()
        return first, again

    first, again = asyncio.run(run())
    assert first.status_code == 200
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert httpx.get(f"{url}/v1/skus/lamp").json()["stock"] == 3


HOLDERS = 20
HOODIES = 5


def test_holds_set_units_aside_until_paid_released_or_expired(stockguard):
    """20 shoppers reserve one hoodie each, 5 on hand: exactly 5 holds. Two holders walk away
    (release) and two refused shoppers reserve again and get theirs; every holder pays. A
    hold left to expire frees its unit by itself, and paying for it after is refused."""
    url, binary, database = stockguard

    async def run():
        async with httpx.AsyncClient(base_url=url) as admin:
            for sku, units in [("hoodie", HOODIES), ("scarf", 1)]:
                created = await admin.post("/v1/skus", json={"sku": sku, "initial_stock": units})
                assert created.status_code == 201, created.text
        app = create_app(url, [Product("hoodie", "Hoodie", 5900), Product("scarf", "Scarf", 1500)])
        quick = create_app(url, [Product("scarf", "Scarf", 1500)], hold_ttl_s=1)
        shop = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")
        quick_shop = httpx.AsyncClient(transport=httpx.ASGITransport(app=quick), base_url="http://shop")
        try:
            carts = []
            for _ in range(HOLDERS):
                cart = (await shop.post("/carts")).json()["id"]
                await shop.post(f"/carts/{cart}/items", json={"sku": "hoodie", "quantity": 1})
                carts.append(cart)
            answers = await asyncio.gather(*(shop.post(f"/carts/{cart}/reserve") for cart in carts))
            held = [cart for cart, a in zip(carts, answers) if a.status_code == 200]
            refused = [cart for cart, a in zip(carts, answers) if a.status_code == 409]
            assert len(held) == HOODIES and len(refused) == HOLDERS - HOODIES, [a.text for a in answers]
            level = (await shop.get("/products")).json()
            assert [p["stock"] for p in level if p["sku"] == "hoodie"] == [0]

            for cart in held[:2]:
                assert (await shop.post(f"/carts/{cart}/abandon")).status_code == 200
            for cart in refused[:2]:
                again = await shop.post(f"/carts/{cart}/reserve")
                assert again.status_code == 200, again.text
            payers = held[2:] + refused[:2]
            paid = await asyncio.gather(*(shop.post(f"/carts/{cart}/pay") for cart in payers))
            assert [p.status_code for p in paid] == [200] * HOODIES, [p.text for p in paid]
            # Paying twice is a replay, not a second sale; paying an abandoned cart is refused.
            assert (await shop.post(f"/carts/{payers[0]}/pay")).status_code == 200
            late = await shop.post(f"/carts/{held[0]}/pay")
            assert late.status_code == 409 and late.json()["detail"]["error"] == "hold_resolved", late.text

            cart = (await quick_shop.post("/carts")).json()["id"]
            await quick_shop.post(f"/carts/{cart}/items", json={"sku": "scarf", "quantity": 1})
            assert (await quick_shop.post(f"/carts/{cart}/reserve")).status_code == 200
            await asyncio.sleep(1.3)
            expired = await quick_shop.post(f"/carts/{cart}/pay")
            assert expired.status_code == 409 and expired.json()["detail"]["error"] == "hold_expired", expired.text
        finally:
            await shop.aclose()
            await quick_shop.aclose()
            await app.state.stockguard.aclose()
            await quick.state.stockguard.aclose()

    asyncio.run(run())
    hoodie = httpx.get(f"{url}/v1/skus/hoodie").json()
    scarf = httpx.get(f"{url}/v1/skus/scarf").json()
    assert (hoodie["stock"], hoodie["reserved"]) == (0, 0), hoodie
    assert (scarf["stock"], scarf["reserved"]) == (1, 0), "the expired hold's unit is back"
    # The CLI sweep writes the expiry; then the audit (HTTP and CLI) is clean.
    sweep = subprocess.run([binary, "holds", "sweep", "--database-url", database], capture_output=True, text=True)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    audit = httpx.get(f"{url}/v1/audit").json()
    assert audit["clean"] and audit["holds_checked"] == HOODIES + 2 + 1, audit
    cli = subprocess.run([binary, "audit", "--database-url", database], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stdout + cli.stderr

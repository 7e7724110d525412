"""A small shop in the style of the FastAPI + Tortoise-ORM tutorials, with its stock kept by
stockguard instead of `select_for_update`.

The shop owns products (names, prices) and carts. Stock never lives here: reading it asks
stockguard, and checking out a cart places one stockguard order with every line, all or
nothing. The cart id is the order id, so a checkout retried after a lost answer (a timeout, a
dropped connection, a 503 outcome_unknown) can never sell twice.

A shop that takes payment first holds the units instead: `reserve` places a stockguard hold
(the cart id is the hold id) that expires by itself if the customer walks away, `pay`
confirms it, `abandon` releases it.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

# Bounded retries of a stock call whose answer was unknown; each waits Retry-After.
CHECKOUT_ATTEMPTS_MAX = 5
RETRY_AFTER_MAX_S = 2.0
# How long a reserved cart holds its units while the customer pays.
HOLD_TTL_S = 900


@dataclass
class Product:
    sku: str
    name: str
    price_cents: int


@dataclass
class Cart:
    id: str
    items: dict[str, int] = field(default_factory=dict)
    placed: dict | None = None


class ItemIn(BaseModel):
    sku: str
    quantity: int = Field(gt=0, le=1000)


def create_app(
    stockguard_url: str, products: list[Product], token: str | None = None, hold_ttl_s: int = HOLD_TTL_S
) -> FastAPI:
    catalog = {p.sku: p for p in products}
    carts: dict[str, Cart] = {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    stockguard = httpx.AsyncClient(base_url=stockguard_url, headers=headers, timeout=10.0)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await stockguard.aclose()

    app = FastAPI(title="fastapi-checkout", lifespan=lifespan)
    app.state.stockguard = stockguard

    def cart_of(cart_id: str) -> Cart:
        cart = carts.get(cart_id)
        if cart is None:
            raise HTTPException(404, "no such cart")
        return cart

    @app.get("/products")
    async def list_products():
        out = []
        for product in catalog.values():
            level = await stockguard.get(f"/v1/skus/{product.sku}")
            stock = level.json()["stock"] if level.status_code == 200 else 0
            out.append({"sku": product.sku, "name": product.name, "price_cents": product.price_cents, "stock": stock})
        return out

    @app.post("/carts", status_code=201)
    async def create_cart():
        cart = Cart(id=f"cart-{uuid.uuid4().hex}")
        carts[cart.id] = cart
        return {"id": cart.id}

    @app.post("/carts/{cart_id}/items")
    async def add_item(cart_id: str, item: ItemIn):
        cart = cart_of(cart_id)
        if item.sku not in catalog:
            raise HTTPException(404, "no such product")
        if cart.placed is not None:
            raise HTTPException(409, "cart already checked out")
        # Two adds of one SKU are two lines; stockguard sums them before the check.
        cart.items[item.sku] = cart.items.get(item.sku, 0) + item.quantity
        return {"id": cart.id, "items": cart.items}

    @app.post("/carts/{cart_id}/checkout")
    async def checkout(cart_id: str):
        cart = cart_of(cart_id)
        if not cart.items:
            raise HTTPException(422, "empty cart")
        body = {
            "order_id": cart.id,
            "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in cart.items.items()],
        }
        answer, problem = await send("/v1/orders", body)
        if answer is not None and answer.status_code == 200:
            cart.placed = answer.json()
            total = sum(catalog[line["sku"]].price_cents * line["quantity"] for line in cart.placed["lines"])
            return {"cart": cart.id, "status": "placed", "total_cents": total, "receipt": cart.placed}
        raise refusal(answer, problem)

    @app.post("/carts/{cart_id}/reserve")
    async def reserve(cart_id: str):
        cart = cart_of(cart_id)
        if not cart.items:
            raise HTTPException(422, "empty cart")
        body = {
            "hold_id": cart.id,
            "ttl_s": hold_ttl_s,
            "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in cart.items.items()],
        }
        answer, problem = await send("/v1/holds", body)
        if answer is not None and answer.status_code == 200:
            hold = answer.json()
            return {"cart": cart.id, "status": "reserved", "expires_at": hold["expires_at"]}
        raise refusal(answer, problem)

    @app.post("/carts/{cart_id}/pay")
    async def pay(cart_id: str):
        cart = cart_of(cart_id)
        # Payment taken: sell what the hold set aside. Confirming twice is a replay.
        answer, problem = await send(f"/v1/holds/{cart.id}/confirm", {})
        if answer is not None and answer.status_code == 200:
            cart.placed = answer.json()
            total = sum(catalog[line["sku"]].price_cents * line["confirmed"] for line in cart.placed["lines"])
            return {"cart": cart.id, "status": "paid", "total_cents": total, "receipt": cart.placed}
        raise refusal(answer, problem)

    @app.post("/carts/{cart_id}/abandon")
    async def abandon(cart_id: str):
        cart = cart_of(cart_id)
        answer, problem = await send(f"/v1/holds/{cart.id}/release", {})
        if answer is not None and answer.status_code == 200:
            return {"cart": cart.id, "status": "released"}
        raise refusal(answer, problem)

    async def send(path: str, body: dict) -> tuple[httpx.Response | None, dict]:
        """POSTs a stock change keyed by its id, retrying while the answer is unknown or the
        service asks to come back: the same id settles it, so a retry never sells twice."""
        for _attempt in range(CHECKOUT_ATTEMPTS_MAX):
            try:
                answer = await stockguard.post(path, json=body)
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if answer.status_code == 200:
                return answer, {}
            if answer.status_code == 503:
                # Nothing changed (or, for outcome_unknown, at most once): retry with the same id.
                retry_after = float(answer.headers.get("retry-after", "1"))
                await asyncio.sleep(min(retry_after, RETRY_AFTER_MAX_S))
                continue
            return answer, answer.json()
        return None, {}

    def refusal(answer: httpx.Response | None, problem: dict) -> HTTPException:
        if answer is None:
            return HTTPException(503, "stock service unavailable; try again")
        kind = problem.get("type", "").rsplit(":", 1)[-1]
        if answer.status_code == 409 and kind == "insufficient_stock":
            return HTTPException(409, {"error": "sold_out", "lines": problem.get("lines", [])})
        if answer.status_code == 409 and kind in ("hold_expired", "hold_resolved"):
            return HTTPException(409, {"error": kind, "state": problem.get("state")})
        return HTTPException(502, {"error": "stock_service", "problem": problem})

    return app

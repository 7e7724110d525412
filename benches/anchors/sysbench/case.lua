-- one deduction of `units` per event on a random sku in [1, nsku]
function thread_init() drv = sysbench.sql.driver(); con = drv:connect() end
function thread_done() con:disconnect() end
local mode = os.getenv("MODE"); local nsku = tonumber(os.getenv("NSKU"))
function event()
  local sku = math.random(1, nsku)
  if mode == "pessimistic" then
    con:query("BEGIN")
    local rs = con:query("SELECT stock FROM inventory WHERE sku=" .. sku .. " FOR UPDATE")
    local stock = tonumber(rs:fetch_row()[1])
    if stock >= 1 then
      con:query("UPDATE inventory SET stock = stock - 1 WHERE sku=" .. sku)
      con:query("INSERT INTO inventory_log(sku, delta, remaining) VALUES (" .. sku .. ", -1, " .. (stock - 1) .. ")")
    end
    con:query("COMMIT")
  elseif mode == "optimistic" then
    local rs = con:query("SELECT stock, version FROM inventory WHERE sku=" .. sku)
    local row = rs:fetch_row(); local stock, ver = tonumber(row[1]), tonumber(row[2])
    con:query("BEGIN")
    local r = con:query("UPDATE inventory SET stock = stock - 1, version = version + 1 WHERE sku=" .. sku .. " AND version=" .. ver .. " AND stock >= 1")
    local n = con:query_row("SELECT ROW_COUNT()")
    if tonumber(n) == 1 then
      con:query("INSERT INTO inventory_log(sku, delta, remaining) VALUES (" .. sku .. ", -1, " .. (stock - 1) .. ")")
    end
    con:query("COMMIT")
  elseif mode == "guarded" then
    con:query("BEGIN")
    con:query("UPDATE inventory SET stock = stock - 1 WHERE sku=" .. sku .. " AND stock >= 1")
    local n = con:query_row("SELECT ROW_COUNT()")
    if tonumber(n) == 1 then
      con:query("INSERT INTO inventory_log(sku, delta, remaining) SELECT sku, -1, stock FROM inventory WHERE sku=" .. sku)
    end
    con:query("COMMIT")
  else -- batch32
    con:query("BEGIN")
    con:query("UPDATE inventory SET stock = stock - 32 WHERE sku=" .. sku .. " AND stock >= 32")
    local n = con:query_row("SELECT ROW_COUNT()")
    if tonumber(n) == 1 then
      local v = {}
      for i = 1, 32 do v[i] = "(" .. sku .. ", -1, 0)" end
      con:query("INSERT INTO inventory_log(sku, delta, remaining) VALUES " .. table.concat(v, ","))
    end
    con:query("COMMIT")
  end
end

package ordersaga

import "strconv"

// Redis keys of each function's domain. Each function writes only under
// its own prefix (its Redis ACL user is confined to it); saga records are
// the saga store's.
func OrderKey(orderID string) string { return "order:o:" + orderID }
func CatalogKey(sku string) string   { return "order:catalog:" + sku }
func BalanceKey(userID int32) string { return "payment:balance:" + strconv.Itoa(int(userID)) }
func StockKey(sku string) string     { return "inventory:stock:" + sku }
func UserKey(userID int32) string    { return "users:user:" + strconv.Itoa(int(userID)) }

// OutboxKey is the notification outbox stream.
const OutboxKey = "notification:outbox"

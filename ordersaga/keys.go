package ordersaga

import "strconv"

// Redis keys of each function's own domain. Each function writes only under
// its own prefix; the saga's state is redisstore's ("ksaga:{<saga>}").
func OrderKey(orderID string) string      { return "order:o:" + orderID }
func CatalogKey(sku string) string        { return "order:catalog:" + sku }
func BalanceKey(userID int32) string      { return "payment:balance:" + strconv.Itoa(int(userID)) }
func ChargeKey(sagaID string) string      { return "payment:charge:" + sagaID }
func StockKey(sku string) string          { return "inventory:stock:" + sku }
func ReservationKey(sagaID string) string { return "inventory:reservation:" + sagaID }
func UserKey(userID int32) string         { return "users:user:" + strconv.Itoa(int(userID)) }

// OutboxKey is the notification outbox stream.
const OutboxKey = "notification:outbox"

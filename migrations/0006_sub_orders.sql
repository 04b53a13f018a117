-- A split Taobao order ships in several parcels: each shipment then names the sub-orders its
-- parcel carries (TOP's `sub_tid`), as ids separated by commas. NULL for a whole order.
ALTER TABLE shipments ADD COLUMN sub_orders TEXT
    CONSTRAINT "sub_orders must be sub-order ids separated by commas, like 111,222"
    CHECK (sub_orders IS NULL OR (
        sub_orders GLOB '[0-9]*' AND sub_orders GLOB '*[0-9]'
        AND sub_orders NOT GLOB '*[^0-9,]*' AND sub_orders NOT GLOB '*,,*'));

//! Taobao TOP `taobao.logistics.trace.search`.

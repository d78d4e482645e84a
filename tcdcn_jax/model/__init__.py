"""The networks: both trunks and the heads, the locally connected layer, conv1 fused with its pool, TCDCN-Averaged."""

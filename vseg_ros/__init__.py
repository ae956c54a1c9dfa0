"""vseg's ROS 2 front end: the segmentation node, image message conversions and rosbag tools."""
